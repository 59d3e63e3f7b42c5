"""Read a .tflite flatbuffer: what every weight tensor really is, and where the bytes go."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from .backend import tflite_schema as S

TYPE_NAMES = {v: k for k, v in vars(S.TensorType).items() if not k.startswith("_") and isinstance(v, int)}
OP_NAMES = {v: k for k, v in vars(S.BuiltinOperator).items() if not k.startswith("_") and isinstance(v, int)}
WEIGHT_OPS = {"FULLY_CONNECTED", "CONV_2D", "DEPTHWISE_CONV_2D", "TRANSPOSE_CONV", "BATCH_MATMUL"}
QUANTIZED_TYPES = {"INT8", "INT4", "UINT8", "INT2"}


@dataclass(frozen=True)
class Kernel:
    op: str
    name: str
    dtype: str  # storage type of the constant (through a DEQUANTIZE if there is one)
    compute_dtype: str  # type the op consumes
    shape: tuple
    bytes: int
    bias_dtype: str
    bias_bytes: int
    scales: int  # quantization scales stored for the kernel (per-channel: one per channel)

    @property
    def quantized(self) -> bool:
        return self.dtype in QUANTIZED_TYPES


@dataclass(frozen=True)
class Audit:
    file_bytes: int
    kernels: tuple
    bytes_by_dtype: dict = field(default_factory=dict)  # every constant buffer, by tensor type
    other_const_bytes: int = 0  # constants that are neither kernel nor bias (shapes, BN leftovers)
    quant_param_values: int = 0  # scale + zero-point values in quantization tables (all tensors)

    @property
    def quantized_kernels(self) -> int:
        return sum(k.quantized for k in self.kernels)

    @property
    def weight_bytes(self) -> int:
        return sum(k.bytes + k.bias_bytes for k in self.kernels)

    @property
    def kernel_dtypes(self) -> dict:
        return dict(Counter(k.dtype for k in self.kernels))

    def as_dict(self) -> dict:
        return {
            "file_bytes": self.file_bytes,
            "weight_bytes": self.weight_bytes,
            "quantized_kernels": self.quantized_kernels,
            "kernel_dtypes": self.kernel_dtypes,
            "bytes_by_dtype": self.bytes_by_dtype,
            "other_const_bytes": self.other_const_bytes,
            "quant_param_values": self.quant_param_values,
            "kernels": [
                {"op": k.op, "name": k.name, "dtype": k.dtype, "compute_dtype": k.compute_dtype,
                 "shape": list(k.shape), "bytes": k.bytes, "bias_dtype": k.bias_dtype,
                 "bias_bytes": k.bias_bytes, "scales": k.scales}
                for k in self.kernels
            ],
        }


def _buffer_bytes(model, tensor) -> int:
    buffer = model.Buffers(tensor.Buffer())
    if buffer is None:
        return 0
    size = buffer.DataLength()
    if not size and hasattr(buffer, "Size"):
        size = buffer.Size() or 0  # buffers stored outside the flatbuffer (> 2 GB models)
    return int(size)


def _scales(tensor) -> int:
    q = tensor.Quantization()
    return q.ScaleLength() if q is not None else 0


def inspect(content: bytes) -> Audit:
    model = S.Model.GetRootAs(content, 0)
    kernels, kernel_tensors = [], set()
    counts = Counter()
    quant_values = 0
    for sg_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(sg_index)
        producers = {}
        for op_index in range(graph.OperatorsLength()):
            op = graph.Operators(op_index)
            for out in op.OutputsAsNumpy() if op.OutputsLength() else ():
                producers[int(out)] = op
        for t_index in range(graph.TensorsLength()):
            tensor = graph.Tensors(t_index)
            size = _buffer_bytes(model, tensor)
            if size:
                counts[TYPE_NAMES.get(tensor.Type(), str(tensor.Type()))] += size
            q = tensor.Quantization()
            if q is not None:
                quant_values += q.ScaleLength() + q.ZeroPointLength()
        for op_index in range(graph.OperatorsLength()):
            op = graph.Operators(op_index)
            code = model.OperatorCodes(op.OpcodeIndex())
            name = OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")
            if name not in WEIGHT_OPS or op.InputsLength() < 2:
                continue
            inputs = [int(i) for i in op.InputsAsNumpy()]
            kernel = _resolve_constant(model, graph, producers, inputs[1])
            if kernel is None:
                continue  # an activation x activation matmul: no weights
            compute = graph.Tensors(inputs[1])
            bias_ix = inputs[2] if len(inputs) > 2 and inputs[2] >= 0 else None
            bias = _resolve_constant(model, graph, producers, bias_ix) if bias_ix is not None else None
            kernel_tensors.update(x for x in (kernel, bias) if x is not None)
            kt = graph.Tensors(kernel)
            bt = graph.Tensors(bias) if bias is not None else None
            kernels.append(Kernel(
                op=name,
                name=kt.Name().decode(),
                dtype=TYPE_NAMES.get(kt.Type(), str(kt.Type())),
                compute_dtype=TYPE_NAMES.get(compute.Type(), str(compute.Type())),
                shape=tuple(int(s) for s in kt.ShapeAsNumpy()) if kt.ShapeLength() else (),
                bytes=_buffer_bytes(model, kt),
                bias_dtype=TYPE_NAMES.get(bt.Type(), "") if bt is not None else "",
                bias_bytes=_buffer_bytes(model, bt) if bt is not None else 0,
                scales=_scales(kt),
            ))
        other = sum(_buffer_bytes(model, graph.Tensors(i)) for i in range(graph.TensorsLength())
                    if i not in kernel_tensors)
    return Audit(len(content), tuple(kernels), dict(counts), other if model.SubgraphsLength() else 0, quant_values)


def _resolve_constant(model, graph, producers, index):
    """The constant tensor behind an op input, looking through DEQUANTIZE; None if not constant."""
    for _ in range(3):
        if _buffer_bytes(model, graph.Tensors(index)):
            return index
        op = producers.get(index)
        if op is None:
            return None
        code = model.OperatorCodes(op.OpcodeIndex())
        if OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode())) != "DEQUANTIZE":
            return None
        index = int(op.InputsAsNumpy()[0])
    return None
