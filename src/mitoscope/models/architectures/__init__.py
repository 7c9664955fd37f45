"""Built-in architectures; importing this package registers them."""

from __future__ import annotations

from mitoscope.models.architectures import (
    atypical_experts,  # noqa: F401
    atypical_multitask,  # noqa: F401
    atypical_single,  # noqa: F401
    retinanet_multitask,  # noqa: F401
)
