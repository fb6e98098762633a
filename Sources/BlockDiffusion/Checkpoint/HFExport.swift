// Ours → theirs: a run directory (or one weights file) as a Hugging Face model directory that the reference's
// `BD3LM.from_pretrained(dir)` (models/hf) loads with no missing or unexpected keys:
//   config.json        BD3LMConfig fields (model_type bd3lm; causal for AR, time_conditioning for SEDD, cross_attn
//                      for bd3, block_size, var_min + sampling_eps_min/max exactly for bd3), keys sorted
//   model.safetensors  backbone.* (EMA weights, F32) + rotary inv_freq, the var_min buffers for bd3; the toolkit's
//                      metadata is kept, so `Checkpoint.open(dir)` gets the tokenizer fingerprint and ids back.
// Both files are written atomically; the bytes are identical for identical inputs.
import Foundation

public enum HFExport {
    /// The weights file a run directory exports: best.safetensors when validated, else last.safetensors.
    public static func weightsFile(runDir: String) throws -> String {
        for n in ["best.safetensors", "last.safetensors"] {
            let p = (runDir as NSString).appendingPathComponent(n)
            if FileManager.default.fileExists(atPath: p) { return p }
        }
        throw ToolError("\(runDir): no best.safetensors or last.safetensors; give the run directory train wrote (-o)")
    }

    /// config.json of the reference's BD3LMConfig for `info`.
    public static func configJSON(_ info: CheckpointInfo) -> String {
        let c = info.config
        let bd3 = info.algorithm == .bd3
        var d: [String: Any] = [
            "architectures": ["BD3LM"], "model_type": "bd3lm", "attn_backend": "sdpa",
            "block_size": info.algorithm == .ar ? 1 : info.blockSize, "vocab_size": c.vocabSize, "model_length": c.length,
            "hidden_dim": c.hiddenSize, "cond_dim": c.condDim, "n_blocks": c.nBlocks, "n_heads": c.nHeads,
            "dropout": Double(c.dropout), "causal": c.causal, "adaln": c.hasAdaLN, "cross_attn": bd3,
            "time_conditioning": c.timeConditioning, "var_min": bd3, "return_dict": false,
        ]
        if bd3 { d["sampling_eps_min"] = info.interval.min; d["sampling_eps_max"] = info.interval.max }
        let data = (try? JSONSerialization.data(withJSONObject: d, options: [.sortedKeys, .prettyPrinted])) ?? Data()
        return String(decoding: data, as: UTF8.self) + "\n"
    }

    /// Exports `source` (a run directory or a weights file of ours) into `outDir` (created if needed).
    public static func export(source: String, to outDir: String) throws {
        var isDir: ObjCBool = false
        guard FileManager.default.fileExists(atPath: source, isDirectory: &isDir) else {
            throw ToolError("\(source) does not exist; give the run directory train wrote (-o, holding best.safetensors or last.safetensors) or a weights file")
        }
        let weights = isDir.boolValue
            ? try weightsFile(runDir: source) : source
        let ck = try Checkpoint.open(weights)
        guard ck.layout == .ours else { throw ToolError("\(weights) is already a reference layout; nothing to export") }
        let info = ck.info
        let model = try ck.model(maxBatch: 1, maxTokens: 1)
        do { try FileManager.default.createDirectory(atPath: outDir, withIntermediateDirectories: true) } catch {
            throw ToolError("cannot create \(outDir): \(error.localizedDescription); check the path and permissions")
        }
        var meta = info.metadata
        meta["format"] = "pt"
        let scalars: [String: Float] = info.algorithm == .bd3
            ? ["sampling_eps_min": Float(info.interval.min), "sampling_eps_max": Float(info.interval.max)] : [:]
        if info.algorithm != .bd3 { meta["sampling_eps_min"] = nil; meta["sampling_eps_max"] = nil }
        do {
            meta[CheckpointDigest.key] = nil
            try CheckpointDigest.save(model, path: (outDir as NSString).appendingPathComponent("model.safetensors"), metadata: meta, extraScalars: scalars)
        } catch { throw ToolError("\(error)") }
        try writeAtomically(Data(configJSON(info).utf8), to: (outDir as NSString).appendingPathComponent("config.json"))
    }

    static func writeAtomically(_ data: Data, to path: String) throws {
        let tmp = path + ".tmp-\(getpid())"
        guard FileManager.default.createFile(atPath: tmp, contents: data), rename(tmp, path) == 0 else {
            unlink(tmp)
            throw ToolError("cannot write \(path): \(String(cString: strerror(errno))); check disk space and permissions")
        }
    }
}

/// A content checksum over the tensors (names, dtypes, shapes, data): metadata `weights_crc32c` in the files
/// `train` and the export write, verified by `Checkpoint.open`. It catches what no structural check can: flipped
/// bits in the weights, or F16 data relabelled BF16 (same size, another model).
public enum CheckpointDigest {
    public static let key = "weights_crc32c"

    static func hex(_ body: ((UnsafeRawBufferPointer) -> Void) throws -> Void) rethrows -> String {
        var c: UInt32 = 0
        try body { c = crc32c($0, crc: c) }
        return String(format: "%08x", c)
    }

    /// Writes `model` like `DiT.save`, with the checksum in the metadata.
    public static func save(_ model: DiT, path: String, metadata: [String: String], extraScalars: [String: Float] = [:]) throws {
        let w = model.safetensorsWriter(extraScalars: extraScalars)
        var meta = model.checkpointMetadata(metadata)
        meta[key] = hex { w.digest($0) }
        try w.write(path: path, metadata: meta)
    }

    static func verify(_ file: SafetensorsFile) throws {
        guard let want = file.metadata[key] else { return }
        let got: String
        do { got = try hex { try file.digest($0) } } catch let e as ModelError { throw ToolError(e.description) }
        guard got == want.lowercased() else {
            throw ToolError("\(file.path): metadata key '\(key)' is \(want) but the tensors give \(got): a weight, dtype or shape was changed after writing; the file is corrupt — use another copy or an earlier checkpoint")
        }
    }
}
