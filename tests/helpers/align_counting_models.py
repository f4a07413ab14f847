"""Run stages/align.py in this process while recording every model construction.

Writes a JSON report: how many transformers models were constructed and which folders
from_pretrained loaded. Used to prove that alignment never builds a reference model.
"""
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "stages"))

import transformers  # noqa: E402

constructed, loaded = [], []
_init = transformers.PreTrainedModel.__init__
_from_pretrained = transformers.PreTrainedModel.from_pretrained.__func__


def counting_init(self, *args, **kwargs):
    constructed.append(type(self).__name__)
    _init(self, *args, **kwargs)


def recording_from_pretrained(cls, path, *args, **kwargs):
    loaded.append(os.path.abspath(str(path)))
    return _from_pretrained(cls, path, *args, **kwargs)


transformers.PreTrainedModel.__init__ = counting_init
transformers.PreTrainedModel.from_pretrained = classmethod(recording_from_pretrained)

if __name__ == "__main__":
    report_path, argv = sys.argv[1], sys.argv[2:]
    import align  # noqa: E402  (stages/align.py)

    align.main(argv)
    with open(report_path, "w") as f:
        json.dump({"constructed": constructed, "loaded": loaded}, f)
