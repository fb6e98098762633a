import Foundation

/// Process set-up shared by every tool.
public enum Runtime {
    /// Debian's OpenBLAS 0.3.21 picks its Haswell kernels on Zen 5 (≈260 GFLOP/s on 2 threads);
    /// the SkylakeX kernels reach ≈500. OpenBLAS reads `OPENBLAS_CORETYPE` once, in its load-time
    /// constructor, which runs before `main` — so a `setenv` here would be too late. When the CPU
    /// has AVX-512 and the user chose no core type, set it and re-exec this same binary; stdin,
    /// stdout and pipes are inherited unchanged. Call first thing in `main`.
    public static func prepareBLAS() {
        #if os(Linux)
        let env = ProcessInfo.processInfo.environment
        guard env["OPENBLAS_CORETYPE"] == nil, env["BD3_NO_REEXEC"] == nil, cpuHasAVX512() else { return }
        setenv("OPENBLAS_CORETYPE", "SkylakeX", 1)
        setenv("BD3_NO_REEXEC", "1", 1)  // never loop, whatever happens
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        execv("/proc/self/exe", &cargs)
        // execv only returns on failure: carry on with the default kernels.
        for p in cargs { free(p) }
        #endif
    }

    static func cpuHasAVX512() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        for line in info.split(separator: "\n") where line.hasPrefix("flags") {
            return line.split(separator: " ").contains("avx512f")
        }
        return false
    }
}
