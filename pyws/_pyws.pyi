# Type stub for the cffi-generated extension module (built from csrc/ by build_ffi.py).
from typing import Any

ffi: Any
lib: Any
