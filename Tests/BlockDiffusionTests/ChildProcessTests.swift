// Support/ChildProcess.swift: typed exit status, the wait with a deadline that kills the whole process group,
// and the line reader's watchdog.
import XCTest
import Foundation
@testable import BlockDiffusion

final class ChildProcessTests: XCTestCase {
    func testExitStatusIsTyped() throws {
        let ok = try ChildProcess.spawnShell("exit 0", what: "a test command")
        XCTAssertEqual(ok.exitStatus(within: 10), .exited(0))
        XCTAssertTrue(ok.exitStatus(within: 0)!.succeeded, "the status is kept once reaped")
        let three = try ChildProcess.spawnShell("exit 3", what: "a test command")
        XCTAssertEqual(three.exitStatus(within: 10)?.description, "exited with status 3")
        let killed = try ChildProcess.spawnShell("kill -TERM $$", what: "a test command")
        XCTAssertEqual(killed.exitStatus(within: 10), .signaled(SIGTERM))
        for c in [ok, three, killed] { close(c.stdinFD); close(c.stdoutFD) }
    }

    func testDeadlineKillsTheWholeGroup() throws {
        // The shell forks a grandchild that would outlive a kill of the shell alone.
        let child = try ChildProcess.spawnShell("sleep 30 & echo $!; wait", what: "a test command")
        let lines = LineReader(fd: child.stdoutFD, name: "the test command's output")
        let grandchild = try XCTUnwrap(try lines.readLine().flatMap { pid_t(String(decoding: $0, as: UTF8.self)) })
        XCTAssertFalse(processIsGone(grandchild))
        XCTAssertNil(child.exitStatus(within: 0.05), "still running at the deadline: killed")
        XCTAssertEqual(child.status, .signaled(SIGKILL))
        var gone = false
        for _ in 0..<200 where !gone { gone = processIsGone(grandchild) || isZombie(grandchild); if !gone { usleep(10_000) } }
        XCTAssertTrue(gone, "the grandchild died with the group")
        close(child.stdinFD); close(child.stdoutFD)
    }

    func testLineReaderWatchdogThrows() throws {
        let child = try ChildProcess.spawnShell("echo one; exec sleep 30", what: "a test command")
        let lines = LineReader(fd: child.stdoutFD, name: "the test command's output")
        lines.idleSlice = 10
        var idles = 0
        lines.idle = { idles += 1; if idles == 5 { throw ToolError("watchdog") } }
        XCTAssertEqual(try lines.readLine().map { String(decoding: $0, as: UTF8.self) }, "one")
        XCTAssertThrowsError(try lines.readLine()) { XCTAssertEqual($0 as? ToolError, ToolError("watchdog")) }
        child.killGroup()
        XCTAssertEqual(child.status, .signaled(SIGKILL))
        close(child.stdinFD); close(child.stdoutFD)
    }

    /// A killed grandchild is a zombie until its parent (the killed shell) is gone and init reaps it.
    private func isZombie(_ pid: pid_t) -> Bool {
        guard let s = try? String(contentsOfFile: "/proc/\(pid)/stat", encoding: .utf8) else { return true }
        return s.split(separator: ")").last?.split(separator: " ").first == "Z"
    }
}
