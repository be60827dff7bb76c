"""The engine: devices, models, data, measurement, and the runs that are measured. Imports nothing from report/ or course/, and never the theory."""
from labkit.engine import notices as _notices

_notices.install()    # before any engine module imports bitsandbytes: what its libraries say is decided in notices.NOTICES
