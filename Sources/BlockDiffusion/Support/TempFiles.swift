// Temporary files of atomic outputs: ".NAME.tmp-PID-RANDOM" (OutputFile) and ".NAME.tmp-PID" (checkpoints)
// next to NAME. A process that exits normally, fails, or is interrupted removes its own (OutputFile.abort,
// Runtime.removeUnfinishedOutputs, the signal handler); one that is killed with SIGKILL or crashes cannot.
// Those are swept by the next process that writes NAME: a temp file whose PID is no longer running is
// garbage. A live PID (the owner, or an unrelated process that reused the number) keeps its file.
import Foundation

/// Removes the temp files of `path` left behind by processes that no longer exist; returns their names.
@discardableResult
public func sweepStaleTempFiles(for path: String) -> [String] {
    let url = URL(fileURLWithPath: path)
    let dir = url.deletingLastPathComponent().path
    let prefix = "." + url.lastPathComponent + ".tmp-"
    guard let names = try? FileManager.default.contentsOfDirectory(atPath: dir) else { return [] }
    var removed: [String] = []
    for name in names where name.hasPrefix(prefix) {
        let rest = name.dropFirst(prefix.count)
        let digits = rest.prefix { $0.isASCII && $0.isNumber }
        guard !digits.isEmpty, digits.count == rest.count || rest.dropFirst(digits.count).first == "-",
              let pid = pid_t(digits), pid > 0, pid != getpid() else { continue }
        if processIsGone(pid) && unlink(dir + "/" + name) == 0 { removed.append(name) }
    }
    return removed
}

/// True when no process `pid` exists (kill(pid, 0) fails with ESRCH; EPERM means it exists).
public func processIsGone(_ pid: pid_t) -> Bool {
    kill(pid, 0) != 0 && errno == ESRCH
}

extension Runtime {
    /// Unlinks the temp files of every OutputFile not committed yet. runTool calls it on its way out, so an
    /// exit through any path leaves no ".NAME.tmp-…" behind.
    public static func removeUnfinishedOutputs() {
        TempFileRegistry.lock.lock(); defer { TempFileRegistry.lock.unlock() }
        for i in 0..<TempFileRegistry.capacity {
            if let p = TempFileRegistry.slots[i] { unlink(p); TempFileRegistry.slots[i] = nil }
        }
    }
}
