"""Reports made from run records, never from a model or a formula (this room imports only config, units, record).

    text        words and text tables: config labels, the delta line, the CLI's tables, the history CSV
    html        the lab panel's HTML tables: one record's theory vs measured, a kernel's history
    charts      figures (matplotlib): where the memory goes, a sweep
    reference   recorded reference sets: loading them with provenance, matching the lab's settings
    timing      the time theory in words: a record's predicted step, its split and its regime
    calibration a calibration's device constants in words (what the doctor and lesson 03 print)
"""
