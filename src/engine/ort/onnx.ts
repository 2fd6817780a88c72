// A small ONNX graph builder over onnx-proto: nodes, typed initializers, inputs/outputs.
// Initializers can be stored as external data (passed to ORT in memory), which is how graphs
// above protobuf's 2 GB limit are loaded (see /work/shared/notes/engine.md).

import onnxProto from 'onnx-proto';

const { onnx } = onnxProto;
type INodeProto = onnxProto.onnx.INodeProto;
type ITensorProto = onnxProto.onnx.ITensorProto;
type IValueInfoProto = onnxProto.onnx.IValueInfoProto;
type IAttributeProto = onnxProto.onnx.IAttributeProto;

export const DT = { float: 1, uint8: 2, int8: 3, int32: 6, int64: 7 } as const;
export type DType = (typeof DT)[keyof typeof DT];

export type AttrValue = number | string | number[] | { float: number } | { floats: number[] };

/** a dimension: fixed size or symbolic name */
export type Dim = number | string;

export interface EncodedModel {
  /** the ModelProto bytes */
  model: Uint8Array;
  /** external initializer data, for ORT's sessionOptions.externalData */
  externalData: { path: string; data: Uint8Array }[];
}

export class GraphBuilder {
  private nodes: INodeProto[] = [];
  private inits: ITensorProto[] = [];
  private external: { path: string; data: Uint8Array }[] = [];
  private inputs: IValueInfoProto[] = [];
  private outputs: IValueInfoProto[] = [];
  private n = 0;
  /** bytes of initializer data held so far */
  initBytes = 0;

  /** initializers of at least this many bytes go to external data when set */
  constructor(private externalThreshold = Infinity) {}

  fresh(prefix: string): string {
    return `${prefix}_${this.n++}`;
  }

  input(name: string, elemType: DType, dims: Dim[]): string {
    this.inputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  output(name: string, elemType: DType, dims: Dim[]): string {
    this.outputs.push(valueInfo(name, elemType, dims));
    return name;
  }

  /** raw-bytes initializer; `bytes` must be little-endian data of `dims` elements of `type` */
  init(name: string, type: DType, dims: number[], bytes: Uint8Array): string {
    const t: ITensorProto = { name, dataType: type, dims };
    if (bytes.byteLength >= this.externalThreshold) {
      const path = `${name}.bin`;
      t.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      t.externalData = [
        { key: 'location', value: path },
        { key: 'offset', value: '0' },
        { key: 'length', value: String(bytes.byteLength) },
      ];
      this.external.push({ path, data: bytes });
    } else {
      t.rawData = bytes;
    }
    this.initBytes += bytes.byteLength;
    this.inits.push(t);
    return name;
  }

  f32(name: string, dims: number[], data: Float32Array): string {
    return this.init(name, DT.float, dims, new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }

  i64(name: string, values: number[]): string {
    const a = BigInt64Array.from(values.map((v) => BigInt(v)));
    return this.init(name, DT.int64, [values.length], new Uint8Array(a.buffer));
  }

  scalarF32(name: string, v: number): string {
    return this.init(name, DT.float, [], new Uint8Array(Float32Array.of(v).buffer));
  }

  /** adds a node; returns its output names (`outs` as count → fresh names, '' = unused slot) */
  node(op: string, inputs: string[], outs: number | string[], attrs: Record<string, AttrValue> = {}, domain = ''): string[] {
    const outputs = typeof outs === 'number' ? Array.from({ length: outs }, () => this.fresh(op)) : outs;
    this.nodes.push({ opType: op, domain, input: inputs, output: outputs, name: this.fresh(`n_${op}`), attribute: attrList(attrs) });
    return outputs;
  }

  /** single-output node */
  op(op: string, inputs: string[], attrs: Record<string, AttrValue> = {}, domain = ''): string {
    return this.node(op, inputs, 1, attrs, domain)[0]!;
  }

  encode(opsets: Record<string, number>): EncodedModel {
    const model = {
      irVersion: 10,
      producerName: 'odsi',
      opsetImport: Object.entries(opsets).map(([domain, version]) => ({ domain, version })),
      graph: { name: 'odsi_stage', node: this.nodes, initializer: this.inits, input: this.inputs, output: this.outputs },
    };
    return { model: onnx.ModelProto.encode(model).finish(), externalData: this.external };
  }
}

function valueInfo(name: string, elemType: DType, dims: Dim[]): IValueInfoProto {
  return {
    name,
    type: { tensorType: { elemType, shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) } } },
  };
}

const AT = onnx.AttributeProto.AttributeType;

function attrList(attrs: Record<string, AttrValue>): IAttributeProto[] {
  return Object.entries(attrs).map(([name, v]): IAttributeProto => {
    if (typeof v === 'number') return { name, type: AT.INT, i: v };
    if (typeof v === 'string') return { name, type: AT.STRING, s: new TextEncoder().encode(v) };
    if (Array.isArray(v)) return { name, type: AT.INTS, ints: v };
    if ('float' in v) return { name, type: AT.FLOAT, f: v.float };
    return { name, type: AT.FLOATS, floats: v.floats };
  });
}
