// bench-sampling-ckpt: writes the two random-weight checkpoints bench/sampling/run.sh samples and scores with
// (no training: sampling speed does not depend on what the weights learned).
//
//   bench-sampling-ckpt --out DIR [--config cpu|small|tiny] [--length 1024] [--vocab 8192] [--block-size 4] [--seed 1]
//     DIR/bd3.safetensors   the named config (default `cpu`: 4 layers × 256, 8 heads, cond 64; `small` = the
//                           official 12 × 768 BD3 shape), model length --length, algo bd3
//     DIR/ar.safetensors    the same sizes, causal (the `score gen` scorer)
//
// Weights: the reference init (DiT.initialize), then every tensor — adaLN and the output linear included, which
// the reference zero-initialises — gets U(±1/√fan_in) noise, so the logits are not all zero and p_x0 is a
// non-trivial distribution (as a trained model's would be). Token ids follow a trained tokenizer of size V:
// V−3 = <|endoftext|> (BOS = EOS), V−2 = [PAD], V−1 = [MASK]; tokenizer fingerprint 0 (unknown).
import Foundation
import BlockDiffusion

Runtime.prepareBLAS()

var out: String? = nil
var length = 1024, vocab = 8192, blockSize = 4
var configName = "cpu"
var seed: UInt64 = 1
var args = CommandLine.arguments.dropFirst().makeIterator()
func fail(_ m: String) -> Never { FileHandle.standardError.write(Data((m + "\n").utf8)); exit(64) }
while let a = args.next() {
    func value() -> String { guard let v = args.next() else { fail("\(a) needs a value") }; return v }
    switch a {
    case "--out": out = value()
    case "--config": configName = value(); guard ModelConfig.names.contains(configName) else { fail("--config must be one of \(ModelConfig.names.joined(separator: ", "))") }
    case "--length": guard let v = Int(value()), v >= 8 else { fail("--length must be an integer ≥ 8") }; length = v
    case "--vocab": guard let v = Int(value()), v >= 8 else { fail("--vocab must be an integer ≥ 8") }; vocab = v
    case "--block-size": guard let v = Int(value()), v >= 1 else { fail("--block-size must be ≥ 1") }; blockSize = v
    case "--seed": guard let v = UInt64(value()) else { fail("--seed must be an unsigned integer") }; seed = v
    default: fail("usage: bench-sampling-ckpt --out DIR [--config cpu|small|tiny] [--length 1024] [--vocab 8192] [--block-size 4] [--seed 1]")
    }
}
guard let out else { fail("--out DIR is required") }
try? FileManager.default.createDirectory(atPath: out, withIntermediateDirectories: true)

struct Sizes { let out: String; let length, vocab, blockSize: Int; let config: String }

func write(_ z: Sizes, causal: Bool, name: String, seed: UInt64) throws {
    let (out, length, vocab, blockSize) = (z.out, z.length, z.vocab, z.blockSize)
    let configName = z.config
    var cfg = ModelConfig.named(configName, vocabSize: vocab)!
    cfg.length = length; cfg.causal = causal; cfg.dropout = 0
    let m = DiT(config: cfg, maxBatch: 1, maxTokens: 1)
    m.initialize(seed: seed)
    var rng = SplitMix64(seed: seed &+ 1000)
    for t in m.tensors {
        let p = m.parameters.baseAddress! + t.offset
        let fan = t.shape.count == 2 ? t.shape[1] : cfg.hiddenSize
        let bound = 1 / Double(fan).squareRoot()
        for i in 0..<t.count { p[i] += Float((rng.nextDouble() * 2 - 1) * bound) }
    }
    let eos = vocab - 3
    let meta = ["algo": causal ? "ar" : "bd3", "block_size": "\(causal ? 1 : blockSize)", "seq_len": "\(length)",
                "vocab_size": "\(vocab)", "mask_id": "\(vocab - 1)", "bos_id": "\(eos)", "eos_id": "\(eos)",
                "pad_id": "\(vocab - 2)", "tokenizer_fingerprint": "0000000000000000", "note": "random weights (bench/sampling)"]
    let path = out + "/" + name
    try m.save(safetensors: path, metadata: meta)
    print("\(path): \(causal ? "AR" : "BD3 L'=\(blockSize)") \(cfg.nBlocks)×\(cfg.hiddenSize), \(cfg.nHeads) heads, V=\(vocab), length \(length), \(m.parameterCount) parameters")
}
do {
    let z = Sizes(out: out, length: length, vocab: vocab, blockSize: blockSize, config: configName)
    try write(z, causal: false, name: "bd3.safetensors", seed: seed)
    try write(z, causal: true, name: "ar.safetensors", seed: seed &+ 1)
} catch { FileHandle.standardError.write(Data("bench-sampling-ckpt: \(error)\n".utf8)); exit(1) }
