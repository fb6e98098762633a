// Running the built tools from tests: find a product next to the test bundle and run it with its
// stdout/stderr captured. The re-exec for OpenBLAS kernels is switched off so the child is the process
// we started (exit codes and signals are its own).
import Foundation
import XCTest

/// Path of a built executable product (.build/<triple>/<config>/NAME).
func cliBinary(_ name: String) throws -> String {
    var candidates = [URL(fileURLWithPath: CommandLine.arguments[0]).deletingLastPathComponent()]
    let b = Bundle.module.bundleURL
    candidates += [b.deletingLastPathComponent(), b.appendingPathComponent("debug"), b.appendingPathComponent("release")]
    for c in candidates {
        let p = c.appendingPathComponent(name).path
        if FileManager.default.isExecutableFile(atPath: p) { return p }
    }
    struct Missing: Error, CustomStringConvertible { let description: String }
    throw Missing(description: "\(name) not found next to the tests (\(candidates.map(\.path))); run swift build first")
}

/// A tool's process, not started, with BD3_NO_REEXEC=1 (no BLAS re-exec under the test runner).
func cliProcess(_ path: String, _ args: [String]) -> Process {
    let p = Process()
    p.executableURL = URL(fileURLWithPath: path)
    p.arguments = args
    var env = ProcessInfo.processInfo.environment
    env["BD3_NO_REEXEC"] = "1"
    p.environment = env
    return p
}

/// Runs a tool; returns its exit code, stdout and stderr.
func runCLI(_ path: String, _ args: [String]) throws -> (code: Int32, out: String, err: String) {
    let p = cliProcess(path, args)
    let o = Pipe(), e = Pipe()
    p.standardOutput = o; p.standardError = e
    try p.run()
    let od = o.fileHandleForReading.readDataToEndOfFile(), ed = e.fileHandleForReading.readDataToEndOfFile()
    p.waitUntilExit()
    return (p.terminationStatus, String(decoding: od, as: UTF8.self), String(decoding: ed, as: UTF8.self))
}
