"""The engine: devices, models, data, measurement, and the runs that are measured. Imports nothing from report/ or course/, and never the theory."""
