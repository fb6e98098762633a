import Foundation
import COpenBLAS

/// Process set-up shared by every tool.
public enum Runtime {
    /// Debian's OpenBLAS 0.3.21 picks its Haswell kernels on Zen 5 (≈260 GFLOP/s on 2 threads);
    /// the SkylakeX kernels reach ≈500. OpenBLAS reads `OPENBLAS_CORETYPE` once, in its load-time
    /// constructor, which runs before `main` — so a `setenv` here would be too late. When the CPU
    /// has AVX-512, set it and re-exec this same binary; stdin, stdout and pipes are inherited
    /// unchanged. Call first thing in `main` (through `prepareTool()`).
    ///
    /// A preset `OPENBLAS_CORETYPE=Haswell` is treated like no choice at all — it is what OpenBLAS
    /// would pick here anyway, and some machine images export it globally — so it is upgraded too.
    /// Any other preset value is respected. `BD3_BLAS_CORETYPE=NAME` pins a core type (e.g.
    /// `Haswell` to keep the slower kernels); `BD3_NO_REEXEC=1` turns the mechanism off.
    public static func prepareBLAS() {
        #if os(Linux)
        guard let wanted = blasCoreToSet(environment: ProcessInfo.processInfo.environment, avx512: cpuHasAVX512()) else { return }
        setenv("OPENBLAS_CORETYPE", wanted, 1)
        setenv("BD3_NO_REEXEC", "1", 1)  // never loop, whatever happens
        let args = CommandLine.arguments
        var cargs: [UnsafeMutablePointer<CChar>?] = args.map { strdup($0) }
        cargs.append(nil)
        execv("/proc/self/exe", &cargs)
        // execv only returns on failure: carry on with the default kernels.
        for p in cargs { free(p) }
        #endif
    }

    /// The core type to re-exec with, or nil to keep the current process (pure: tested directly).
    static func blasCoreToSet(environment env: [String: String], avx512: Bool) -> String? {
        guard env["BD3_NO_REEXEC"] == nil else { return nil }
        let wanted: String
        if let pinned = env["BD3_BLAS_CORETYPE"], !pinned.isEmpty {
            wanted = pinned
        } else {
            let preset = env["OPENBLAS_CORETYPE"] ?? ""
            guard avx512, preset.isEmpty || preset.lowercased() == "haswell" else { return nil }
            wanted = "SkylakeX"
        }
        return env["OPENBLAS_CORETYPE"] == wanted ? nil : wanted
    }

    /// The kernel set OpenBLAS chose in this process (e.g. "SkylakeX", "Haswell").
    public static var blasCoreName: String {
        guard let p = openblas_get_corename() else { return "unknown" }
        return String(cString: p)
    }

    static func cpuHasAVX512() -> Bool {
        guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8) else { return false }
        for line in info.split(separator: "\n") where line.hasPrefix("flags") {
            return line.split(separator: " ").contains("avx512f")
        }
        return false
    }
}
