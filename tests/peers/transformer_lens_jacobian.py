"""TransformerLens 4.3's JacobianLens on one model, in its own process (tests/test_jacobian_peer.py).

Reads lensreport's lens file, reads it out on given token ids, and fits its own lens on the
same documents; writes what it computed as JSON and a lens file for the test to compare.
Usage: python transformer_lens_jacobian.py MODEL_FOLDER LENS_FILE JOB_JSON OUT_DIR
"""

import json
import os
import sys
from pathlib import Path

os.environ["HF_HUB_OFFLINE"] = "1"
import torch  # noqa: E402
from transformer_lens.model_bridge import TransformerBridge  # noqa: E402
from transformer_lens.tools.analysis import JacobianLens  # noqa: E402

torch.set_num_threads(1)
folder, lens_file, job_file, out = sys.argv[1], sys.argv[2], Path(sys.argv[3]), Path(sys.argv[4])
job = json.loads(job_file.read_text())
bridge = TransformerBridge.boot_transformers(folder, device="cpu", dtype=torch.float32).eval()
lens = JacobianLens.from_pretrained(lens_file, model=bridge)  # validates it against the model
readout = lens.readout(bridge, torch.tensor([job["input_ids"]]), return_full_logits=True)
entropy, topk_probs = {}, {}
for layer, logits in readout.lens_logits.items():
    logp = torch.log_softmax(logits.double(), -1)
    entropy[int(layer)] = (-(logp.exp() * logp).sum(-1)).tolist()
    # The probability TransformerLens gives each of lensreport's top-k tokens of that cell.
    ids = torch.tensor(job["topk_ids"][int(layer) + 1])
    topk_probs[int(layer)] = logp.exp().gather(-1, ids).tolist()
fitted = JacobianLens.fit(bridge, job["documents"], corpus="peer", skip_first_positions=job["skip"],
                          max_seq_len=job["context"], show_progress=False)
fitted.save(out / "tl_fit.pt")
ids = [bridge.to_tokens(text)[0, :job["context"]].tolist() for text in job["documents"]]
(out / "tl.json").write_text(json.dumps({
    "source_layers": lens.source_layers, "n_prompts": lens.n_prompts, "entropy": entropy,
    "topk_probs": topk_probs,
    "fit_ids": ids, "fit_n_prompts": fitted.n_prompts}))
