"""The shared foundation that no stage owns: user errors and how commands report them (:mod:`common.errors`),
YAML configs into dataclasses (:mod:`common.config`), and file formats and input paths (:mod:`common.files`).

Curation, modeling and launch import from here, never from each other's internals; ``common`` imports from none
of them. Pure Python (PyYAML aside): no Ray, no torch.
"""
