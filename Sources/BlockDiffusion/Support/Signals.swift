// Broken pipes: by default a write to a pipe whose reader has gone away kills the process with
// SIGPIPE, silently and before any temp file is cleaned up. Tools ignore the signal instead, so the
// write fails with EPIPE, surfaces as a ToolError (exit 1), and OutputFile removes its temp file.

import Foundation

extension Runtime {
    /// Call once at the start of every tool's `main` (after `prepareBLAS()`).
    public static func ignoreSIGPIPE() {
        signal(SIGPIPE, SIG_IGN)
    }

    /// Everything a tool's `main` needs before argument parsing: BLAS kernel choice, SIGPIPE.
    public static func prepareTool() {
        prepareBLAS()
        ignoreSIGPIPE()
    }
}
