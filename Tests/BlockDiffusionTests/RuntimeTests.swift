import XCTest
@testable import BlockDiffusion

final class RuntimeTests: XCTestCase {
    func testCPUFlagsReadable() {
        // The probe must not crash; its value depends on the machine.
        _ = Runtime.cpuHasAVX512()
        XCTAssertFalse(Runtime.blasCoreName.isEmpty)
    }

    /// Which OpenBLAS core type the tools re-exec with.
    func testBLASCoreDecision() {
        let f = Runtime.blasCoreToSet
        XCTAssertEqual(f([:], true), "SkylakeX")                                   // nothing chosen: upgrade
        XCTAssertEqual(f(["OPENBLAS_CORETYPE": "Haswell"], true), "SkylakeX")      // OpenBLAS's own pick here: upgrade
        XCTAssertNil(f(["OPENBLAS_CORETYPE": "SkylakeX"], true))                   // already fast: no re-exec
        XCTAssertNil(f(["OPENBLAS_CORETYPE": "Zen"], true))                        // another explicit choice: respected
        XCTAssertNil(f([:], false))                                                // no AVX-512: nothing to gain
        XCTAssertEqual(f(["BD3_BLAS_CORETYPE": "Haswell"], true), "Haswell")       // pinned by the user
        XCTAssertNil(f(["BD3_BLAS_CORETYPE": "Haswell", "OPENBLAS_CORETYPE": "Haswell"], true))
        XCTAssertNil(f(["BD3_NO_REEXEC": "1"], true))                              // after the re-exec: never loop
    }
}
