// Signals.
// Broken pipes: by default a write to a pipe whose reader has gone away kills the process with
// SIGPIPE, silently and before any temp file is cleaned up. Tools ignore the signal instead, so the
// write fails with EPIPE, surfaces as a ToolError (exit 1), and OutputFile removes its temp file.
// Interrupts: on SIGINT/SIGTERM/SIGHUP the temp files of unfinished OutputFiles are unlinked before
// the process dies with the signal's default action (so Ctrl-C leaves no ".NAME.tmp-…" behind); the
// signal is first passed on to child commands running in their own process group (ChildGroupRegistry).

import Foundation

/// Temp paths of open OutputFiles, as C strings in fixed slots the signal handler can read without
/// allocating. Slots are claimed/released under a lock; a released string is leaked on purpose
/// (a handler might be reading it), which costs a few bytes per output file.
enum TempFileRegistry {
    static let capacity = 256
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<UnsafeMutablePointer<CChar>?> = {
        let p = UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>.allocate(capacity: capacity)
        p.initialize(repeating: nil, count: capacity)
        return p
    }()
    static let lock = NSLock()

    /// Returns the slot index, or -1 when full (the file then just is not cleaned on a signal).
    static func register(_ path: String) -> Int {
        lock.lock(); defer { lock.unlock() }
        for i in 0..<capacity where slots[i] == nil {
            slots[i] = strdup(path)
            return i
        }
        return -1
    }

    static func unregister(_ slot: Int) {
        guard slot >= 0 else { return }
        lock.lock(); defer { lock.unlock() }
        slots[slot] = nil
    }
}

/// Process groups of running child commands (a scorer command runs in its own group so that it can be
/// killed as a whole): the signal handler passes SIGINT/SIGTERM/SIGHUP on to them, since the terminal
/// no longer does. Slots hold a pgid or 0.
enum ChildGroupRegistry {
    static let capacity = 64
    nonisolated(unsafe) static let slots: UnsafeMutablePointer<pid_t> = {
        let p = UnsafeMutablePointer<pid_t>.allocate(capacity: capacity)
        p.initialize(repeating: 0, count: capacity)
        return p
    }()
    static let lock = NSLock()

    /// Returns the slot index, or -1 when full (that group then just gets no forwarded signal).
    static func register(_ pgid: pid_t) -> Int {
        lock.lock(); defer { lock.unlock() }
        for i in 0..<capacity where slots[i] == 0 {
            slots[i] = pgid
            return i
        }
        return -1
    }

    static func unregister(_ slot: Int) {
        guard slot >= 0 else { return }
        lock.lock(); defer { lock.unlock() }
        slots[slot] = 0
    }
}

private func unlinkTempFilesAndDie(_ signal: Int32) {
    let groups = ChildGroupRegistry.slots
    for i in 0..<ChildGroupRegistry.capacity where groups[i] > 0 { kill(-groups[i], signal) }
    let slots = TempFileRegistry.slots
    for i in 0..<TempFileRegistry.capacity {
        if let p = slots[i] { unlink(p) }
    }
    Glibc.signal(signal, SIG_DFL)
    raise(signal)
}

extension Runtime {
    /// Call once at the start of every tool's `main` (after `prepareBLAS()`).
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Unlink unfinished outputs' temp files on SIGINT, SIGTERM and SIGHUP, then die as usual.
    /// Signals the parent set to be ignored (nohup) stay ignored.
    public static func cleanUpTempFilesOnSignals() {
        _ = TempFileRegistry.slots
        _ = ChildGroupRegistry.slots
        for s in [SIGINT, SIGTERM, SIGHUP] {
            let previous = signal(s, unlinkTempFilesAndDie)
            if unsafeBitCast(previous, to: Int.self) == unsafeBitCast(SIG_IGN, to: Int.self) { signal(s, SIG_IGN) }
        }
    }

    /// Everything a tool's `main` needs before argument parsing: BLAS kernel choice, SIGPIPE,
    /// temp-file cleanup on interrupts.
    public static func prepareTool() {
        prepareBLAS()
        ignoreSIGPIPE()
        cleanUpTempFilesOnSignals()
    }
}
