"""TransformerLens 4.3's direct logit attribution on one model, in its own process
(tests/test_decomposition.py): ``decompose_resid``, ``stack_head_results`` and
``logit_attrs`` on given token ids, for given tokens per position; written as JSON.
Usage: python transformer_lens_dla.py MODEL_FOLDER JOB_JSON OUT_JSON [MODEL_FOLDER …]
(several models in one process: TransformerLens takes seconds to import)

The bridge folds the final LayerNorm's weight into the unembedding (``logit_attrs`` applies
only the cached scale and centring) and centres the writing weights (which the final norm's
centring undoes); the unembedding is not centred and value biases are not folded, so its
numbers are lensreport's components, not a variant of them.
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402

torch.set_num_threads(1)


def attribute(folder: str, job_file: Path, out: Path) -> None:
    job = json.loads(job_file.read_text())
    bridge = TransformerBridge.boot_transformers(folder, device="cpu",
                                                 dtype=torch.float32).eval()
    bridge.enable_compatibility_mode(disable_warnings=True, fold_ln=True,
                                     center_writing_weights=True, center_unembed=False,
                                     fold_value_biases=False)
    bridge.set_use_attn_result(True)
    ids = torch.tensor([job["input_ids"]])
    with torch.no_grad():
        _, cache = bridge.run_with_cache(ids)
        resid, labels = cache.decompose_resid(layer=-1, return_labels=True)
        heads, head_labels = cache.stack_head_results(layer=-1, return_labels=True)
        tokens = job["token_ids"]  # per position, lensreport's attributed tokens
        width = min(len(t) for t in tokens)
        attrs, head_attrs = [], []
        for j in range(width):
            column = torch.tensor([[t[j] for t in tokens]])
            attrs.append(cache.logit_attrs(resid, column).tolist())  # [component][batch][pos]
            head_attrs.append(cache.logit_attrs(heads, column).tolist())
    out.write_text(json.dumps({"labels": labels, "head_labels": head_labels, "width": width,
                               "attrs": attrs, "head_attrs": head_attrs}))


for start in range(1, len(sys.argv), 3):
    attribute(sys.argv[start], Path(sys.argv[start + 1]), Path(sys.argv[start + 2]))
