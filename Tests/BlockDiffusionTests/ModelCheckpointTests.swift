// safetensors reader/writer and DiT checkpoint save/load: round trips, torch.compile prefixes, dtype
// conversions, and strict rejection of truncated or corrupt files.
import XCTest
@testable import BlockDiffusion

final class ModelCheckpointTests: XCTestCase {
    var dir: String = ""
    override func setUp() {
        dir = NSTemporaryDirectory() + "/model-ckpt-\(getpid())-\(UInt64.random(in: 0..<UInt64.max))"
        try? FileManager.default.createDirectory(atPath: dir, withIntermediateDirectories: true)
    }
    override func tearDown() { try? FileManager.default.removeItem(atPath: dir) }

    func bytesOf(_ w: SafetensorsWriter, _ meta: [String: String] = [:]) -> [UInt8] { w.serialize(metadata: meta) }

    /// Builds a file from a raw header string and data bytes.
    func rawFile(_ header: String, _ data: [UInt8]) -> [UInt8] {
        let h = Array(header.utf8)
        var out: [UInt8] = []
        for i in 0..<8 { out.append(UInt8((UInt64(h.count) >> (8 * UInt64(i))) & 0xff)) }
        return out + h + data
    }

    func testSaveLoadRoundTripWithExtrasAndMetadata() throws {
        let a = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        randomizeAll(a, seed: 1)
        let path = dir + "/m.safetensors"
        try a.save(safetensors: path, metadata: ["note": "x\"y"], extraScalars: ["sampling_eps_min": 0.3, "sampling_eps_max": 0.8])
        let f = try SafetensorsFile(path: path)
        XCTAssertEqual(f.metadata["note"], "x\"y")
        XCTAssertEqual(f.metadata["format"], "pt")
        let decoded = try JSONDecoder().decode(ModelConfig.self, from: Data(f.metadata["model_config"]!.utf8))
        XCTAssertEqual(decoded, tinyConfig())
        XCTAssertEqual(f.metadata["model_config"], tinyConfig().json)
        XCTAssertEqual(f.entry(DiT.invFreqName)?.shape, [4])
        XCTAssertEqual(f.entry("sampling_eps_min")?.shape, [])
        let b = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        let extras = try b.load(safetensors: path)
        XCTAssertEqual(extras, ["sampling_eps_min": 0.3, "sampling_eps_max": 0.8])
        XCTAssertEqual(Array(a.parameters), Array(b.parameters))
        // No temp file left behind.
        XCTAssertEqual(try FileManager.default.contentsOfDirectory(atPath: dir), ["m.safetensors"])
    }

    func testOrigModPrefixAndMissingInvFreqAccepted() throws {
        let a = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        randomizeAll(a, seed: 2)
        var w = SafetensorsWriter()
        for t in a.tensors.reversed() {   // order in the file does not matter
            w.add(name: "_orig_mod." + t.name, shape: t.shape, floats: Array(a.tensor(named: t.name)!))
        }
        let path = dir + "/c.safetensors"
        try w.write(path: path)
        let b = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        XCTAssertEqual(try b.load(safetensors: path), [:])
        XCTAssertEqual(Array(a.parameters), Array(b.parameters))
    }

    func testLoadRejectsWrongShapesMissingUnknownAndBadInvFreq() throws {
        let a = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        func write(_ edit: (inout [(String, [Int], [Float])]) -> Void) throws -> String {
            var items = a.tensors.map { ($0.name, $0.shape, Array(a.tensor(named: $0.name)!)) }
            edit(&items)
            var w = SafetensorsWriter()
            for (n, s, v) in items { w.add(name: n, shape: s, floats: v) }
            let p = dir + "/e\(UInt32.random(in: 0..<UInt32.max)).safetensors"
            try w.write(path: p)
            return p
        }
        func expectError(_ path: String, _ fragment: String, line: UInt = #line) {
            XCTAssertThrowsError(try a.load(safetensors: path), line: line) { e in
                XCTAssertTrue("\(e)".contains(fragment), "\(e)", line: line)
            }
        }
        expectError(try write { $0.removeLast() }, "missing 1 parameter")
        expectError(try write { $0[1].1 = [$0[1].1[1], $0[1].1[0]] }, "has shape")
        expectError(try write { $0.append(("backbone.extra.weight", [2, 2], [1, 2, 3, 4])) }, "unexpected tensor")
        expectError(try write { $0.append((DiT.invFreqName, [4], [1, 0.5, 0.25, 0.125])) }, "inv_freq")
        // The correct inv_freq is accepted.
        XCTAssertNoThrow(try a.load(safetensors: try write { $0.append((DiT.invFreqName, [4], RotaryTable.invFreq(headDim: 8))) }))
        expectError(dir + "/nope.safetensors", "missing or unreadable")
        expectError(dir, "directory")
    }

    func testDtypeConversions() throws {
        // F16 1.5 = 0x3E00, BF16 -2.0 = 0xC000, I64 -7, I32 123456, U8 200, BOOL 1, F64 0.25
        var data: [UInt8] = []
        data += [0x00, 0x3E]
        data += [0x00, 0xC0]
        data += withUnsafeBytes(of: Int64(-7).littleEndian, Array.init)
        data += withUnsafeBytes(of: Int32(123456).littleEndian, Array.init)
        data += [200, 1]
        data += withUnsafeBytes(of: (0.25 as Double).bitPattern.littleEndian, Array.init)
        let header = """
        {"h":{"dtype":"F16","shape":[1],"data_offsets":[0,2]},"b":{"dtype":"BF16","shape":[1],"data_offsets":[2,4]},\
        "i64":{"dtype":"I64","shape":[1],"data_offsets":[4,12]},"i32":{"dtype":"I32","shape":[1],"data_offsets":[12,16]},\
        "u8":{"dtype":"U8","shape":[],"data_offsets":[16,17]},"bool":{"dtype":"BOOL","shape":[1,1],"data_offsets":[17,18]},\
        "f64":{"dtype":"F64","shape":[1],"data_offsets":[18,26]},"__metadata__":{"k":"v"}}
        """
        let f = try SafetensorsFile(bytes: rawFile(header, data))
        XCTAssertEqual(try f.floats("h"), [1.5]); XCTAssertEqual(try f.floats("b"), [-2])
        XCTAssertEqual(try f.int32s("i64"), [-7]); XCTAssertEqual(try f.floats("i64"), [-7])
        XCTAssertEqual(try f.int32s("i32"), [123456]); XCTAssertEqual(try f.int32s("u8"), [200])
        XCTAssertEqual(try f.int32s("bool"), [1]); XCTAssertEqual(try f.floats("f64"), [0.25])
        XCTAssertEqual(f.metadata, ["k": "v"])
        XCTAssertThrowsError(try f.int32s("h"))       // floats are not integers
        XCTAssertThrowsError(try f.floats("absent"))
        // Writer types round trip.
        var w = SafetensorsWriter()
        w.add(name: "a", shape: [2], int64s: [5, -6]); w.add(name: "b", shape: [3], bools: [true, false, true])
        w.add(name: "c", shape: [2], int32s: [7, 8]); w.add(name: "d", shape: [1, 2], floats: [0.5, -1])
        let g = try SafetensorsFile(bytes: w.serialize())
        XCTAssertEqual(try g.int32s("a"), [5, -6]); XCTAssertEqual(try g.int32s("b"), [1, 0, 1])
        XCTAssertEqual(try g.int32s("c"), [7, 8]); XCTAssertEqual(try g.floats("d"), [0.5, -1])
        XCTAssertEqual(g.entry("d")?.shape, [1, 2])
    }

    func testCorruptAndTruncatedFilesAreRejected() throws {
        var w = SafetensorsWriter()
        w.add(name: "x", shape: [2, 3], floats: [1, 2, 3, 4, 5, 6])
        w.add(name: "y", shape: [1], floats: [7])
        let good = w.serialize(metadata: ["a": "b"])
        XCTAssertNoThrow(try SafetensorsFile(bytes: good))
        func rejects(_ bytes: [UInt8], _ why: String, line: UInt = #line) {
            XCTAssertThrowsError(try SafetensorsFile(bytes: bytes), why, line: line) { e in
                XCTAssertTrue("\(e)".contains("corrupt or truncated"), "\(e)", line: line)
            }
        }
        rejects(Array(good.dropLast()), "truncated data")
        rejects(good + [0], "trailing byte")
        rejects(Array(good.prefix(5)), "shorter than the length field")
        rejects(Array(good.prefix(20)), "truncated header")
        var badLen = good; badLen[0] = 0xff; badLen[3] = 0x7f
        rejects(badLen, "header length too large")
        var badJSON = good; badJSON[8] = UInt8(ascii: "[")
        rejects(badJSON, "not JSON object")
        let d = [UInt8](repeating: 0, count: 8)
        rejects(rawFile(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[2,6]}}"#, d), "overlap")
        rejects(rawFile(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[0,4]},"y":{"dtype":"F32","shape":[1],"data_offsets":[4,12]}}"#, d), "out of range")
        rejects(rawFile(#"{"x":{"dtype":"F32","shape":[2],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "size vs shape")
        rejects(rawFile(#"{"x":{"dtype":"Q8","shape":[1],"data_offsets":[0,1]}}"#, [0]), "dtype")
        rejects(rawFile(#"{"x":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}}"#, d), "gap at start")
        rejects(rawFile(#"{"x":{"dtype":"F32","shape":[-1],"data_offsets":[0,4]}}"#, [0, 0, 0, 0]), "negative dim")
        rejects(rawFile(#"{"__metadata__":{"a":1}}"#, []), "non-string metadata")
        // A truncated checkpoint file on disk gives the same clear error through DiT.load.
        let a = DiT(config: tinyConfig(), maxBatch: 1, maxTokens: 4)
        let path = dir + "/t.safetensors"
        try a.save(safetensors: path)
        let full = try Data(contentsOf: URL(fileURLWithPath: path))
        try full.prefix(full.count - 100).write(to: URL(fileURLWithPath: path))
        XCTAssertThrowsError(try a.load(safetensors: path)) { e in XCTAssertTrue("\(e)".contains("truncated"), "\(e)") }
    }
}
