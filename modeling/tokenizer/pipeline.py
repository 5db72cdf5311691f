"""The tokenizers pipeline (normalizer -> pre-tokenizer -> model -> post-processor, decoder), its trainer, and the
directory transformers loads.

Round trip: the pre-tokenizer/decoder pairs are chosen so that ``decode(encode(text)) == text`` for normalized
text, spaces, tabs and newlines included (see the package notes). Unigram's byte fallback (on by default) makes
that hold for characters never seen in training too: they become UTF-8 byte tokens, which the ByteFallback
decoder turns back into the characters.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from pathlib import Path

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, processors, trainers

from modeling.tokenizer.config import CONTINUATION_PREFIX, SPACE_MARK, TokenizerTrainConfig

#: The byte tokens of byte fallback, in Llama/SentencePiece spelling: <0x00> ... <0xFF>.
BYTE_TOKENS = [f"<0x{b:02X}>" for b in range(256)]
_BYTE_TOKEN = re.compile(r"<0x[0-9A-F]{2}>")
#: How far below the lowest trained piece the byte tokens score. Unigram's lattice also matches them as
#: literal text ("<0x41>" in a hex dump); scored this low, spelling such text from ordinary pieces always wins,
#: while byte fallback still emits them for characters no piece covers.
BYTE_SCORE_MARGIN = 1000.0
#: The characters byte tokens are spelled with, always in a byte-fallback alphabet: literal "<0x41>" in a text
#: then always has a spelling from ordinary pieces, which beats the byte token's low score.
BYTE_TOKEN_CHARS = "<>x0123456789ABCDEF"


def build_tokenizer(cfg: TokenizerTrainConfig) -> tuple[Tokenizer, trainers.Trainer]:
    """Return an untrained tokenizer and its trainer, set up so that decode(encode(text)) == text."""
    specials = cfg.special_tokens
    if cfg.model == "bpe":
        tok = Tokenizer(models.BPE())  # no unk: every byte has a token
        tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
        tok.decoder = decoders.ByteLevel()
        trainer: trainers.Trainer = trainers.BpeTrainer(
            vocab_size=cfg.vocab_size,
            min_frequency=cfg.min_frequency,
            special_tokens=specials,
            initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
            show_progress=cfg.show_progress,
        )
    else:
        # "first" marks only the start of the text, not the text after a special token, so "<|user|>Hi"
        # decodes without a stray space (transformers' legacy=False fix for Llama does the same).
        scheme = "first" if cfg.prefix_space else "never"
        tok = Tokenizer(
            models.Unigram() if cfg.model == "unigram"
            else models.WordPiece(unk_token=cfg.unk_token, continuing_subword_prefix=CONTINUATION_PREFIX)
        )
        tok.pre_tokenizer = pre_tokenizers.Metaspace(replacement=SPACE_MARK, prepend_scheme=scheme)
        # WordPiece's own decoder joins pieces with spaces (lossy): strip the prefix, then un-mark spaces.
        strip_prefix = [decoders.Replace(Regex(f"^{CONTINUATION_PREFIX}"), "")] if cfg.model == "wordpiece" else []
        # ByteFallback turns runs of <0xNN> tokens back into characters; unlike Llama's decoder there is no
        # Fuse before Metaspace (Metaspace after Fuse drops the spaces in tokenizers 0.23).
        fallback = [decoders.ByteFallback()] if cfg.uses_byte_fallback else []
        tok.decoder = decoders.Sequence(
            [*strip_prefix, *fallback, decoders.Metaspace(replacement=SPACE_MARK, prepend_scheme=scheme)]
        )
        if cfg.model == "unigram":
            trainer = trainers.UnigramTrainer(
                # the 256 byte tokens are added after training (add_byte_fallback) and count in vocab_size
                vocab_size=max(1, cfg.vocab_size - (len(BYTE_TOKENS) if cfg.uses_byte_fallback else 0)),
                special_tokens=specials,
                unk_token=cfg.unk_token,
                max_piece_length=cfg.max_piece_length,
                initial_alphabet=list(BYTE_TOKEN_CHARS) if cfg.uses_byte_fallback else [],
                show_progress=cfg.show_progress,
            )
        else:
            trainer = trainers.WordPieceTrainer(
                vocab_size=cfg.vocab_size,
                min_frequency=cfg.min_frequency,
                special_tokens=specials,
                continuing_subword_prefix=CONTINUATION_PREFIX,
                show_progress=cfg.show_progress,
            )
    if cfg.normalizer == "nfkc":
        tok.normalizer = normalizers.NFKC()
    return tok, trainer


def add_byte_fallback(tok: Tokenizer, cfg: TokenizerTrainConfig) -> None:
    """Give a trained Unigram the 256 byte tokens and switch byte fallback on, as Llama's tokenizer.json has.

    The trainer cannot do it (it builds a model without byte fallback and would spend vocabulary on the byte
    tokens as special tokens, which the added-token matcher would then find in text), so the model is rebuilt
    from the trained pieces and their scores, the byte tokens appended with a score far below every piece.
    A trained piece that happens to be spelled like a byte token is dropped: fallback would decode it as a byte.
    """
    model = json.loads(tok.to_str())["model"]
    pieces = [(p, s) for p, s in model["vocab"] if not _BYTE_TOKEN.fullmatch(p)]
    low = min(s for p, s in pieces if p not in cfg.special_tokens) if len(pieces) > len(cfg.special_tokens) else 0.0
    pieces += [(b, low - BYTE_SCORE_MARGIN) for b in BYTE_TOKENS]
    tok.model = models.Unigram(pieces, model["unk_id"], byte_fallback=True)


def add_bos_eos(tok: Tokenizer, cfg: TokenizerTrainConfig) -> None:
    """Wrap every encoding in bos ... eos (pairs: bos A eos bos B eos), with the trained ids."""
    bos, eos = cfg.bos_token, cfg.eos_token
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}",
        pair=f"{bos} $A {eos} {bos}:1 $B:1 {eos}:1",
        special_tokens=[(bos, tok.token_to_id(bos)), (eos, tok.token_to_id(eos))],
    )


def min_vocab_size(cfg: TokenizerTrainConfig, tok: Tokenizer, sample: Sequence[str]) -> tuple[int, int]:
    """Smallest vocabulary that can hold the alphabet plus the special tokens, and the alphabet size.

    Byte-level BPE always needs its 256 byte tokens. Unigram and WordPiece need every character they see;
    the alphabet is estimated on ``sample`` (normalized the way training will), a lower bound for the corpus.
    Unigram with byte fallback needs the 256 byte tokens on top.
    """
    if cfg.model == "bpe":
        alphabet = len(pre_tokenizers.ByteLevel.alphabet())
    else:
        chars: set[str] = set()
        for text in sample:
            chars.update(tok.normalizer.normalize_str(text) if tok.normalizer is not None else text)
        chars.discard(" ")
        chars.add(SPACE_MARK)
        if cfg.uses_byte_fallback:
            chars.update(BYTE_TOKEN_CHARS)
        alphabet = len(chars)
    extra = len(BYTE_TOKENS) if cfg.uses_byte_fallback else 0
    return alphabet + len(cfg.special_tokens) + extra, alphabet


def save_transformers_dir(tok: Tokenizer, cfg: TokenizerTrainConfig, output: Path) -> None:
    """Write a directory ``AutoTokenizer.from_pretrained`` loads with unk/bos/eos/pad set.

    The two small JSON files are written here rather than through ``PreTrainedTokenizerFast.save_pretrained``:
    importing transformers costs 1.5-6 s (more than 10 % of training a 32 MB corpus), and transformers 5 would
    write ``tokenizer_class: TokenizersBackend`` and a list-valued ``extra_special_tokens`` that transformers 4
    (still allowed by pyproject) cannot read. The keys below are the ones both majors read; the tests load the
    directory with AutoTokenizer and check that transformers' own save_pretrained of it reloads identically, and
    ``tests/modeling/test_export.py`` loads it with transformers 4.56.0 and 4.57.6 too.
    """
    tok.save(str(output / "tokenizer.json"))
    special_map = {
        "unk_token": cfg.unk_token,
        "bos_token": cfg.bos_token,
        "eos_token": cfg.eos_token,
        "pad_token": cfg.pad_token,
        "additional_special_tokens": list(cfg.extra_special_tokens),
    }
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        **special_map,
        # transformers' default clean-up glues " ." to "." and breaks the round trip.
        "clean_up_tokenization_spaces": False,
    }
    for name, content in (("tokenizer_config.json", config), ("special_tokens_map.json", special_map)):
        (output / name).write_text(json.dumps(content, indent=2, ensure_ascii=False) + "\n")

