"""The pocket model's character-level tokenizer and ChatML chat template.

One token per printable ASCII character (plus newline), and a few added tokens
that must stay atomic: the ChatML markers and the think tags. The think tags are
added as *non-special* tokens on purpose, as in Qwen3 and DeepSeek-R1: vLLM
detokenizes with skip_special_tokens=True, and a reasoning parser that looks for
"</think>" in the text would never find a tag that decoding dropped.
"""

from __future__ import annotations

import json
from pathlib import Path

IM_START = "<|im_start|>"
IM_END = "<|im_end|>"  # end of a turn; the model's EOS
PAD = "<|endoftext|>"
UNK = "<|unk|>"
THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"

SPECIAL = (PAD, IM_START, IM_END, UNK)
CHARS = tuple(["\n"] + [chr(c) for c in range(32, 127)])
# Padded to a multiple of 64: vLLM's CPU kernels prefer aligned matrix shapes,
# and the unused rows cost 0.03M parameters.
VOCAB_SIZE = 128

# Qwen3-style switch: thinking on puts "<think>\n" into the prompt, so the model
# starts reasoning at once; thinking off writes an empty think block into the
# prompt, so the model answers directly and generates no think tag at all.
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' -}}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}"
    "{{- '<|im_start|>assistant\\n' -}}"
    "{%- if enable_thinking is defined and enable_thinking is false -%}"
    "{{- '<think>\\n\\n</think>\\n\\n' -}}"
    "{%- else -%}"
    "{{- '<think>\\n' -}}"
    "{%- endif -%}"
    "{%- endif -%}"
)


def vocab() -> dict[str, int]:
    tokens = list(SPECIAL) + [THINK_OPEN, THINK_CLOSE] + list(CHARS)
    assert len(tokens) <= VOCAB_SIZE
    return {tok: i for i, tok in enumerate(tokens)}


def build(out_dir: str | Path) -> None:
    """Write tokenizer.json, tokenizer_config.json and the chat template into `out_dir`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    table = vocab()
    tok = Tokenizer(models.WordLevel({t: i for t, i in table.items()}, unk_token=UNK))
    # Every character is its own piece; newlines included ([\s\S], not ".").
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    # Pieces join with nothing between them (the default would insert spaces).
    tok.decoder = decoders.Fuse()
    tok.add_special_tokens([AddedToken(t, special=True, normalized=False) for t in SPECIAL])
    tok.add_tokens([AddedToken(t, special=False, normalized=False) for t in (THINK_OPEN, THINK_CLOSE)])
    tok.save(str(out / "tokenizer.json"))

    added = {
        str(table[t]): {
            "content": t,
            "lstrip": False,
            "normalized": False,
            "rstrip": False,
            "single_word": False,
            "special": t in SPECIAL,
        }
        for t in list(SPECIAL) + [THINK_OPEN, THINK_CLOSE]
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": added,
        "bos_token": None,
        "eos_token": IM_END,
        "pad_token": PAD,
        "unk_token": UNK,
        "model_max_length": 8192,
        "clean_up_tokenization_spaces": False,
        "chat_template": CHAT_TEMPLATE,
    }
    (out / "tokenizer_config.json").write_text(json.dumps(config, indent=2) + "\n")
    (out / "special_tokens_map.json").write_text(
        json.dumps({"eos_token": IM_END, "pad_token": PAD, "unk_token": UNK}, indent=2) + "\n"
    )
    (out / "chat_template.jinja").write_text(CHAT_TEMPLATE + "\n")


def prompt_text(question: str, thinking: bool = True) -> str:
    """What the chat template renders for one user turn plus the generation prompt."""
    head = f"{IM_START}user\n{question}{IM_END}\n{IM_START}assistant\n"
    return head + (f"{THINK_OPEN}\n" if thinking else f"{THINK_OPEN}\n\n{THINK_CLOSE}\n\n")


def encode(text: str) -> list[int]:
    """Tokenise without the tokenizers package: the training loop's hot path."""
    table = vocab()
    ids: list[int] = []
    i = 0
    atomic = list(SPECIAL) + [THINK_OPEN, THINK_CLOSE]
    while i < len(text):
        for tok in atomic:
            if text.startswith(tok, i):
                ids.append(table[tok])
                i += len(tok)
                break
        else:
            ids.append(table.get(text[i], table[UNK]))
            i += 1
    return ids
