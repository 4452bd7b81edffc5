"""Run by Python at start-up in every process ``meshprop-run`` starts: instrument, then run the
``sitecustomize`` that would have run without meshprop, if there is one."""

import importlib.util
import logging
import os
import sys

try:
    import meshprop

    meshprop.instrument()
except Exception:  # the app starts all the same, without propagation
    logging.getLogger("meshprop").warning("meshprop-run: instrument() failed", exc_info=True)

_here = os.path.dirname(os.path.abspath(__file__))
for _entry in sys.path:
    if os.path.abspath(_entry or os.curdir) == _here:
        continue
    _path = os.path.join(_entry or os.curdir, "sitecustomize.py")
    if os.path.isfile(_path):
        _spec = importlib.util.spec_from_file_location("_meshprop_next_sitecustomize", _path)
        if _spec is not None and _spec.loader is not None:
            _module = importlib.util.module_from_spec(_spec)
            _spec.loader.exec_module(_module)
        break
