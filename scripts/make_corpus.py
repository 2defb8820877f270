"""Write the demo corpora: English prose from the Python standard library's docstrings.

Any Python has this text, it is under the PSF licence, and it is real writing (not a word
salad), so the tuned lens and the corpus curves of the demo measure something. Each
docstring of at least MIN_CHARS characters is one document. Run from the repository root:

    python scripts/make_corpus.py     # writes prompts/corpus/{train,eval}.txt

eval.txt holds the held-out docstrings (every fifth), one paragraph per document.
"""

from __future__ import annotations

import importlib
import inspect
from pathlib import Path

MODULES = ["argparse", "asyncio", "base64", "bisect", "calendar", "collections", "csv",
           "datetime", "decimal", "difflib", "email.message", "fractions", "functools",
           "heapq", "http.client", "inspect", "itertools", "json", "logging", "math",
           "os", "pathlib", "pickle", "random", "re", "shutil", "socket", "sqlite3",
           "statistics", "string", "subprocess", "tarfile", "textwrap", "threading", "typing",
           "unittest", "urllib.parse", "uuid", "zipfile"]
MIN_CHARS = 300
OUT = Path("prompts/corpus")


def paragraphs(documents: list[str], min_chars: int = 150) -> list[str]:
    """The held-out docstrings as paragraph documents: many short documents, so a corpus
    budget of a few hundred tokens still spans enough documents for a bootstrap."""
    return [p for d in documents for p in d.split("\n") if len(p) >= min_chars]


def docstrings() -> list[str]:
    seen, documents = set(), []
    for name in MODULES:
        module = importlib.import_module(name)
        members = [module] + [value for key, value in sorted(vars(module).items())
                              if not key.startswith("_") and (inspect.isclass(value)
                                                              or inspect.isfunction(value))]
        for member in members:
            doc = inspect.getdoc(member) or ""
            paragraphs = [" ".join(p.split()) for p in doc.split("\n\n") if p.strip()]
            text = "\n".join(p for p in paragraphs if not p.startswith((">>>", "...")))
            if len(text) >= MIN_CHARS and text not in seen:
                seen.add(text)
                documents.append(text)
    return documents


def main() -> None:
    documents = docstrings()
    OUT.mkdir(parents=True, exist_ok=True)
    # Every fifth document is held out: the tuned lens is evaluated on text it never saw.
    train = [d for i, d in enumerate(documents) if i % 5]
    held_out = paragraphs([d for i, d in enumerate(documents) if i % 5 == 0])
    (OUT / "train.txt").write_text("\n\n".join(train) + "\n", encoding="utf-8")
    (OUT / "eval.txt").write_text("\n\n".join(held_out) + "\n", encoding="utf-8")
    print(f"{len(train)} + {len(held_out)} documents, "
          f"{sum(map(len, train))} + {sum(map(len, held_out))} characters")


if __name__ == "__main__":
    main()
