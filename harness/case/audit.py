"""Read a .tflite flatbuffer: what every weight tensor really is, and where the bytes go."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

from harness.backend import tflite_schema as S

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
    subgraph: int = 0  # tensor names and indices are per subgraph
    shared_bytes: int = 0  # of bytes + bias_bytes: buffers an earlier subgraph already holds

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
        return sum(k.bytes + k.bias_bytes - k.shared_bytes for k in self.kernels)

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
            "kernels": [_kernel_dict(k) for k in self.kernels],
        }


def _kernel_dict(k: Kernel) -> dict:
    row = {"op": k.op, "name": k.name, "dtype": k.dtype, "compute_dtype": k.compute_dtype,
           "shape": list(k.shape), "bytes": k.bytes, "bias_dtype": k.bias_dtype,
           "bias_bytes": k.bias_bytes, "scales": k.scales}
    # only files with several subgraphs have these: single-subgraph records stay as they were
    row.update({key: v for key, v in (("subgraph", k.subgraph), ("shared_bytes", k.shared_bytes)) if v})
    return row


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


def _dtype(tensor) -> str:
    return TYPE_NAMES.get(tensor.Type(), str(tensor.Type()))


def inspect(content: bytes) -> Audit:
    """Tensor indices mean something only inside their subgraph, so each subgraph is read with its
    own tensors and producers. Buffers are model-wide and the converter deduplicates identical
    read-only ones, also across subgraphs (a while body reusing a weight of the main graph): a buffer
    is charged to the first subgraph that references it, and later subgraphs do not count it again
    (in bytes_by_dtype, other_const_bytes or weight_bytes). Within one subgraph counting stays per
    tensor, as it always was, so single-subgraph files (everything the zoo builds) audit unchanged."""
    model = S.Model.GetRootAs(content, 0)
    kernels, counts, charged = [], Counter(), set()
    other = quant_values = 0
    for sg_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(sg_index)
        found, kernel_tensors = _kernels(model, graph, sg_index, charged)
        kernels += found
        mine = set()
        for t_index in range(graph.TensorsLength()):
            tensor = graph.Tensors(t_index)
            q = tensor.Quantization()
            if q is not None:
                quant_values += q.ScaleLength() + q.ZeroPointLength()
            size = _buffer_bytes(model, tensor) if tensor.Buffer() not in charged else 0
            if size:
                mine.add(tensor.Buffer())
                counts[_dtype(tensor)] += size
                other += size if t_index not in kernel_tensors else 0
        charged |= mine
    return Audit(len(content), tuple(kernels), dict(counts), other, quant_values)


def _kernels(model, graph, sg_index: int, charged: set) -> tuple:
    """The weight ops of one subgraph, and the indices (in this subgraph) of their kernel and bias
    tensors. ``charged``: buffers an earlier subgraph already counted."""
    producers = {}
    for op_index in range(graph.OperatorsLength()):
        op = graph.Operators(op_index)
        for out in op.OutputsAsNumpy() if op.OutputsLength() else ():
            producers[int(out)] = op
    kernels, kernel_tensors = [], set()
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
        k_bytes = _buffer_bytes(model, kt)
        b_bytes = _buffer_bytes(model, bt) if bt is not None else 0
        kernels.append(Kernel(
            op=name,
            name=kt.Name().decode(),
            dtype=_dtype(kt),
            compute_dtype=_dtype(compute),
            shape=tuple(int(s) for s in kt.ShapeAsNumpy()) if kt.ShapeLength() else (),
            bytes=k_bytes,
            bias_dtype=TYPE_NAMES.get(bt.Type(), "") if bt is not None else "",
            bias_bytes=b_bytes,
            scales=_scales(kt),
            subgraph=sg_index,
            shared_bytes=(k_bytes if kt.Buffer() in charged else 0)
            + (b_bytes if bt is not None and bt.Buffer() in charged else 0),
        ))
    return kernels, kernel_tensors


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


def op_counts(content: bytes) -> dict:
    """{builtin op name: how many} over every subgraph. A last-N file crosses from float to int8 at a
    QUANTIZE and back at a DEQUANTIZE: their count is what a partial selection adds to each inference."""
    model = S.Model.GetRootAs(content, 0)
    found: Counter = Counter()
    for sg_index in range(model.SubgraphsLength()):
        graph = model.Subgraphs(sg_index)
        for op_index in range(graph.OperatorsLength()):
            code = model.OperatorCodes(graph.Operators(op_index).OpcodeIndex())
            found[OP_NAMES.get(max(code.BuiltinCode(), code.DeprecatedBuiltinCode()), "CUSTOM")] += 1
    return dict(found)
