// The file-backed safetensors reader: tensors are read one at a time from the open file (a checkpoint load holds the
// model plus one tensor, not the whole file). It must read what the in-memory reader reads, and a file cut short
// after it was opened is an error naming the file, never a crash.
import XCTest
import Foundation
@testable import BlockDiffusion

final class SafetensorsFileTests: XCTestCase {
    func sample() -> SafetensorsWriter {
        var w = SafetensorsWriter()
        w.add(name: "a", shape: [3, 5], floats: (0..<15).map { Float($0) * 0.25 - 1 })
        w.add(name: "b", shape: [4], int32s: [7, -3, 1 << 30, 0])
        w.add(name: "c", shape: [0], floats: [])
        w.add(name: "d", shape: [2], int64s: [5, -9])
        return w
    }

    func testFileReadsEqualMemoryReads() throws {
        let w = sample()
        let bytes = w.serialize(metadata: ["k": "v"])
        let path = NSTemporaryDirectory() + "st-\(getpid()).safetensors"
        defer { unlink(path) }
        try w.write(path: path, metadata: ["k": "v"])
        let f = try SafetensorsFile(path: path), m = try SafetensorsFile(bytes: bytes)
        XCTAssertEqual(f.metadata, m.metadata); XCTAssertEqual(f.entries, m.entries)
        for n in ["a", "c"] { XCTAssertEqual(try f.floats(n), try m.floats(n)) }
        XCTAssertEqual(try f.int32s("b"), [7, -3, 1 << 30, 0]); XCTAssertEqual(try f.int32s("d"), try m.int32s("d"))
        var out = [Float](repeating: 0, count: 15)
        try out.withUnsafeMutableBufferPointer { try f.weights("a", into: $0) }
        XCTAssertEqual(out, try m.floats("a"))
        var df: [UInt8] = [], dm: [UInt8] = [], dw: [UInt8] = []
        try f.digest { df += $0 }; try m.digest { dm += $0 }; w.digest { dw += $0 }
        XCTAssertEqual(df, dw); XCTAssertEqual(dm, dw)
    }

    /// Opening reads the header only: tensor bytes are read when a tensor is asked for (so a load never holds the
    /// file's data region). Shown by changing a tensor's bytes in the file after opening it.
    func testTensorsAreReadOnDemand() throws {
        let path = NSTemporaryDirectory() + "st-lazy-\(getpid()).safetensors"
        defer { unlink(path) }
        try sample().write(path: path)
        let f = try SafetensorsFile(path: path)
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
        let e = try XCTUnwrap(f.entry("a"))
        let dataStart = size - f.entries.values.map(\.end).max()!
        let h = try XCTUnwrap(FileHandle(forWritingAtPath: path))
        try h.seek(toOffset: UInt64(dataStart + e.begin))
        try h.write(contentsOf: withUnsafeBytes(of: Float(42).bitPattern.littleEndian) { Data($0) })
        try h.close()
        XCTAssertEqual(try f.floats("a")[0], 42)
        XCTAssertEqual(try f.floats("a")[1], -0.75)
    }

    func testFileShortenedAfterOpenIsAnError() throws {
        let path = NSTemporaryDirectory() + "st-cut-\(getpid()).safetensors"
        defer { unlink(path) }
        try sample().write(path: path)
        let f = try SafetensorsFile(path: path)
        let size = (try FileManager.default.attributesOfItem(atPath: path)[.size] as! NSNumber).intValue
        XCTAssertEqual(truncate(path, off_t(size - 20)), 0)
        XCTAssertThrowsError(try f.int32s("d")) { e in
            XCTAssertTrue(e is ModelError, "\(e)")
            XCTAssertTrue("\(e)".contains(path) && "\(e)".contains("shortened"), "\(e)")
        }
        XCTAssertThrowsError(try f.digest { _ in })
        // Opened again, the header no longer fits the file.
        XCTAssertThrowsError(try SafetensorsFile(path: path)) { XCTAssertTrue("\($0)".contains("corrupt or truncated"), "\($0)") }
        XCTAssertThrowsError(try SafetensorsFile(path: NSTemporaryDirectory())) { XCTAssertTrue("\($0)".contains("is a directory"), "\($0)") }
        XCTAssertThrowsError(try SafetensorsFile(path: path + ".missing")) { XCTAssertTrue("\($0)".contains("missing or unreadable"), "\($0)") }
    }
}
