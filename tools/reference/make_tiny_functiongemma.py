"""Build testdata/tiny-functiongemma from testdata/tiny-gemma3 (plain JSON, no torch).

FunctionGemma is Gemma 3 270M with function-call control tokens. The fixture
keeps tiny-gemma3's random weights and gives seven of its last vocabulary ids
to FunctionGemma's control tokens (special added tokens; the merges that made
the old tokens are dropped), and FunctionGemma's published chat template
(testdata/templates/functiongemma.jinja: declarations in a developer turn,
calls and results with the control tokens). It exercises the server's
template-`tools` path and the control-token call syntax.
"""
import json
import shutil
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2] / "testdata"
SRC, DST = ROOT / "tiny-gemma3", ROOT / "tiny-functiongemma"
TOKENS = ["<start_function_declaration>", "<end_function_declaration>", "<start_function_call>",
          "<end_function_call>", "<start_function_response>", "<end_function_response>", "<escape>"]

TEMPLATE = (ROOT / "templates" / "functiongemma.jinja").read_text(encoding="utf-8")


def main():
    if DST.exists():
        shutil.rmtree(DST)
    DST.mkdir()
    for f in ["generation_config.json", "model.safetensors"]:
        shutil.copy(SRC / f, DST / f)
    # A longer context than tiny-gemma3's 256 (arbitrary for random weights): declarations need room.
    cfg = json.loads((SRC / "config.json").read_text())
    cfg["max_position_embeddings"] = 2048
    (DST / "config.json").write_text(json.dumps(cfg, indent=2))
    tok = json.loads((SRC / "tokenizer.json").read_text())
    vocab = tok["model"]["vocab"]
    by_id = {i: t for t, i in vocab.items()}
    n = len(vocab)
    freed = [by_id[i] for i in range(n - len(TOKENS), n)]
    for t, new in zip(freed, TOKENS):
        i = vocab.pop(t)
        vocab[new] = i
        tok["added_tokens"].append({"id": i, "content": new, "single_word": False, "lstrip": False,
                                    "rstrip": False, "normalized": False, "special": True})
    gone = set(freed)
    tok["model"]["merges"] = [m for m in tok["model"]["merges"]
                              if "".join(m) not in gone and m[0] not in gone and m[1] not in gone]
    (DST / "tokenizer.json").write_text(json.dumps(tok, ensure_ascii=False, indent=1))
    cfg = json.loads((SRC / "tokenizer_config.json").read_text())
    cfg["chat_template"] = TEMPLATE
    (DST / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2))
    print(f"wrote {DST}: ids {n - len(TOKENS)}..{n - 1} are {TOKENS}")


if __name__ == "__main__":
    main()
