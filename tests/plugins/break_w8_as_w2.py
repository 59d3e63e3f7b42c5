"""A pytest plugin for the gate's end-to-end test only (loaded with -p): a deliberately broken
quantizer that trains and exports the selected units with 2-bit weights where 8 were configured.
The source of harness/ is untouched, so config hashes match the baseline and the gate compares."""

from harness.case import quantize
from harness.design.config import QuantConfig

_annotate = quantize.annotate


def _broken_annotate(model, chosen, quant):
    if quant.weight_bits == 8 and chosen:
        quant = QuantConfig(2, quant.activation_bits, quant.per_channel, quant.method)
    return _annotate(model, chosen, quant)


quantize.annotate = _broken_annotate
