"""Language codes: the one normalisation every backend's labels go through, and each backend's label set.

The label sets are spelled out so that a config can be validated without loading (or even installing) a model;
tests/curation/test_language.py checks each against the real model.
"""

from __future__ import annotations

import re

UND = "und"
"""Code written when the language cannot be determined (ISO 639-2 'undetermined')."""

_ALIASES: dict[str, str] = {
    # legacy ISO 639-1 codes some models still emit
    "iw": "he", "in": "id", "ji": "yi", "jw": "jv", "mo": "ro",
    # ISO 639-3 individual languages folded into their ISO 639-1 macrolanguage, so that
    # ``languages=("zh",)`` keeps Cantonese / Wu text and ``("ar",)`` keeps Egyptian Arabic
    "cmn": "zh", "yue": "zh", "wuu": "zh", "arz": "ar", "ary": "ar", "azb": "az", "ckb": "ku", "sdh": "ku",
    "kmr": "ku", "uzs": "uz", "pes": "fa", "prs": "fa", "gug": "gn", "fuv": "ff", "kik": "ki",
    # Norwegian: lingua says nb, the others say no
    "nb": "no",
    # py3langid's "no linguistic content"
    "zxx": UND,
}


def normalise_code(code: str) -> str:
    """Map a backend's label to ISO 639-1 where one exists (``zh-cn`` -> ``zh``, ``iw`` -> ``he``, ``yue`` ->
    ``zh``); codes without a 639-1 equivalent (``ceb``, ``war``) stay as the backend's ISO 639-3 code."""
    code = code.strip().lower().replace("__label__", "")
    primary = re.split(r"[-_]", code, maxsplit=1)[0]
    return _ALIASES.get(primary, primary) or UND


FASTTEXT_LABELS = (
    "af als am an ar arz as ast av az azb ba bar bcl be bg bh bn bo bpy br bs bxr ca cbk ce ceb ckb co cs cv "
    "cy da de diq dsb dty dv el eml en eo es et eu fa fi fr frr fy ga gd gl gn gom gu gv he hi hif hr hsb ht "
    "hu hy ia id ie ilo io is it ja jbo jv ka kk km kn ko krc ku kv kw ky la lb lez li lmo lo lrc lt lv mai "
    "mg mhr min mk ml mn mr mrj ms mt mwl my myv mzn nah nap nds ne new nl nn no oc or os pa pam pfl pl pms "
    "pnb ps pt qu rm ro ru rue sa sah sc scn sco sd sh si sk sl so sq sr su sv sw ta te tg th tk tl tr tt tyv "
    "ug uk ur uz vec vep vi vls vo wa war wuu xal xmf yi yo yue zh"
)
LANGDETECT_LABELS = (
    "af ar bg bn ca cs cy da de el en es et fa fi fr gu he hi hr hu id it ja kn ko lt lv mk ml mr ne nl no pa "
    "pl pt ro ru sk sl so sq sv sw ta te th tl tr uk ur vi zh-cn zh-tw"
)
LANGID_LABELS = (
    "ace af am an ar ary arz as az ba bcl be bg bn br bs ca crh cs cy da de dz el en eo es et eu ext fa fi fo "
    "fr fuv fy ga gcf gcr gd gl gom grc gu gug guw ha hbo he hi hr ht hu hy id ig is it ja jv ka kab kik kk km "
    "kn ko ku ky la lb lg lij ln lo lt ltg lv mg mk ml mn mr ms mt my ne nl nn no nso oc om or pa pcm pl ps pt "
    "qu ro ru rw sa sdh se si sk sl sn so sq sr st sv sw ta te tg th tk tl tr tt ug uk ur uz uzs vec vi vo wa "
    "wuu xh yo yue zh zu"
)
LINGUA_LABELS = (
    "af ar az be bg bn bs ca cs cy da de el en eo es et eu fa fi fr ga gu he hi hr hu hy id is it ja ka kk ko "
    "la lg lt lv mi mk mn mr ms nb nl nn pa pl pt ro ru sk sl sn so sq sr st sv sw ta te th tl tn tr ts uk ur "
    "vi xh yo zh zu"
)


def label_codes(labels: str) -> frozenset[str]:
    """The normalised codes of a space-separated list of backend labels (``und`` left out)."""
    return frozenset(normalise_code(label) for label in labels.split()) - {UND}
