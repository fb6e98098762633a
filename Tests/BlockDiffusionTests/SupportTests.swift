import Foundation
import XCTest
@testable import BlockDiffusion

/// A fresh empty directory, removed by the caller's defer.
func makeTempDir(_ tag: String) throws -> String {
    let path = FileManager.default.temporaryDirectory.appendingPathComponent("bd3-\(tag)-\(getpid())-\(UInt32.random(in: 0...UInt32.max))").path
    try FileManager.default.createDirectory(atPath: path, withIntermediateDirectories: true)
    return path
}

func directoryEntries(_ dir: String) -> [String] {
    ((try? FileManager.default.contentsOfDirectory(atPath: dir)) ?? []).sorted()
}

final class SupportTests: XCTestCase {
    func testCommitWritesAtomicallyAndLeavesNoTemp() throws {
        let dir = try makeTempDir("commit")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/out.bin"
        try Data("old".utf8).write(to: URL(fileURLWithPath: path))
        let out = try OutputFile(path: path)
        try out.write(Array("new contents".utf8))
        try out.flush()
        // Before commit the final name still holds the old result; the temp file is hidden beside it.
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "old")
        XCTAssertEqual(directoryEntries(dir).count, 2)
        try out.commit()
        XCTAssertEqual(try String(contentsOfFile: path, encoding: .utf8), "new contents")
        XCTAssertEqual(directoryEntries(dir), ["out.bin"])
    }

    func testLargeWritesGoThrough() throws {
        let dir = try makeTempDir("large")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let path = dir + "/big.bin"
        let out = try OutputFile(path: path)
        let chunk = (0..<300_000).map { UInt8(truncatingIfNeeded: $0 &* 7) }
        for _ in 0..<5 { try out.write(chunk) }
        try out.write([1, 2, 3])
        try out.commit()
        let back = try [UInt8](Data(contentsOf: URL(fileURLWithPath: path)))
        XCTAssertEqual(back.count, 1_500_003)
        XCTAssertEqual(Array(back[300_000..<300_010]), Array(chunk[0..<10]))
        XCTAssertEqual(Array(back.suffix(3)), [1, 2, 3])
    }

    func testAbortAndDeinitLeaveNothing() throws {
        let dir = try makeTempDir("abort")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        let out = try OutputFile(path: dir + "/a.bin")
        try out.write([1, 2, 3])
        out.abort()
        XCTAssertEqual(directoryEntries(dir), [])
        do {
            let dropped = try OutputFile(path: dir + "/b.bin")
            try dropped.write([4])
            try dropped.flush()
            XCTAssertEqual(directoryEntries(dir).count, 1)
        }
        XCTAssertEqual(directoryEntries(dir), [], "deinit without commit must remove the temp file")
    }

    func testBrokenPipeIsAToolError() throws {
        Runtime.ignoreSIGPIPE()
        var fds: [Int32] = [0, 0]
        XCTAssertEqual(pipe(&fds), 0)
        close(fds[0])
        let sink = FileSink(fd: fds[1], name: "stdout", owns: true)
        try sink.write([1, 2, 3])
        XCTAssertThrowsError(try sink.flush()) { error in
            XCTAssertTrue("\(error)".contains("pipe was closed"), "\(error)")
        }
    }

    func testFullDiskIsAToolError() throws {
        let fd = open("/dev/full", O_WRONLY)
        guard fd >= 0 else { throw XCTSkip("/dev/full not available") }
        let sink = FileSink(fd: fd, name: "'/dev/full'", owns: true)
        try sink.write([1])
        XCTAssertThrowsError(try sink.flush()) { error in
            XCTAssertTrue("\(error)".contains("no space left"), "\(error)")
        }
    }

    func testInputErrorsSayWhatToDo() throws {
        let dir = try makeTempDir("input")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try openInput(dir + "/missing.tok")) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try openInput(dir)) {
            XCTAssertTrue("\($0)".contains("is a directory"), "\($0)")
        }
        try Data([7, 8, 9]).write(to: URL(fileURLWithPath: dir + "/f"))
        let source = try openInput(dir + "/f")
        var buffer = [UInt8](repeating: 0, count: 10)
        let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
        XCTAssertEqual(Array(buffer[..<n]), [7, 8, 9])
    }

    func testOutputErrors() throws {
        let dir = try makeTempDir("output")
        defer { try? FileManager.default.removeItem(atPath: dir) }
        XCTAssertThrowsError(try OutputFile(path: dir + "/no/such/dir/x.tok")) {
            XCTAssertTrue("\($0)".contains("does not exist"), "\($0)")
        }
        XCTAssertThrowsError(try OutputFile(path: dir)) {
            XCTAssertTrue("\($0)".contains("is a directory"), "\($0)")
        }
    }

    func testMemorySourceServesChunks() throws {
        let source = MemorySource([1, 2, 3, 4, 5], maxRead: 2)
        var buffer = [UInt8](repeating: 0, count: 10)
        var got: [UInt8] = []
        while true {
            let n = try buffer.withUnsafeMutableBytes { try source.read(into: $0) }
            if n == 0 { break }
            XCTAssertLessThanOrEqual(n, 2)
            got += buffer[..<n]
        }
        XCTAssertEqual(got, [1, 2, 3, 4, 5])
    }
}
