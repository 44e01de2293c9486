"""`prefixed`: a ConfigError re-rooted under the sweep field that named the file or section it came from.

A base experiment YAML, a search-space entry or a variant's overrides are validated on their own;
the user has to edit the sweep field that brought them in (`set.optim.lr`, `params.model.fusion`,
`ablation.variants.no_nee.nee.enabled`), so that is the field the message names.
"""

from __future__ import annotations

from mer_core.errors import ConfigError


def prefixed(err: ConfigError, prefix: str, *, problem: str | None = None, suffix: str = "") -> ConfigError:
    """A copy of `err` whose field is `prefix.<field>` (and whose problem text may be replaced/extended)."""
    old = err.problem
    field = f"{prefix}.{err.field}" if prefix else err.field
    return ConfigError(field, err.allowed, err.given, (problem or old) + suffix)
