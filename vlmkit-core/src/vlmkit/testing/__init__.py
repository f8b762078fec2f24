"""vlmkit's conformance kit: the checks every plugin must pass, as pytest classes to subclass.

One suite per kind. Subclass it in a ``test_*.py`` file of your plugin, under a ``Test*`` name, and say
what to build; the inherited ``test_*`` methods check the contract::

    from vlmkit.testing import EncoderConformance

    class TestPatchEncoder(EncoderConformance):
        component = "template-patch"            # registry name, or the class itself
        component_args = {"image_size": 32}     # default: the class's ``tiny_args``

Suites: ``EncoderConformance``, ``ConnectorConformance``, ``ObjectiveConformance``,
``DatasetConformance``. The partners a suite assembles around your component (an encoder for a
connector, a connector for an encoder) are the kit's own test doubles (``GridEncoder`` as ``kit-grid``,
``LinearConnector`` as ``kit-linear``, registered in-process while a check runs), so the kit needs no
vlmkit package besides core; set ``encoders`` / ``connector`` / ``final_connector`` to use others.
Override a ``test_*`` method (``pytest.mark.skip`` it, with a reason) only when a check cannot apply to
your component. ``import vlmkit`` does not import this package, and this package does not import
pytest (it only needs it while tests run).
"""

from __future__ import annotations

from vlmkit.testing.base import ComponentConformance, tiny_args_for
from vlmkit.testing.connector import ConnectorConformance
from vlmkit.testing.dataset import DatasetConformance
from vlmkit.testing.doubles import GRID_ENCODER, LINEAR_CONNECTOR, GridEncoder, LinearConnector
from vlmkit.testing.encoder import EncoderConformance
from vlmkit.testing.inputs import conversation_batch, random_boxes, random_images
from vlmkit.testing.model_checks import ModuleConformance
from vlmkit.testing.objective import ObjectiveConformance
from vlmkit.testing.suites import generate_suites, registered_names

__all__ = [
    "ComponentConformance", "ModuleConformance", "EncoderConformance", "ConnectorConformance",
    "ObjectiveConformance", "DatasetConformance", "tiny_args_for", "conversation_batch", "random_images",
    "random_boxes", "generate_suites", "registered_names", "GridEncoder", "LinearConnector", "GRID_ENCODER",
    "LINEAR_CONNECTOR",
]
