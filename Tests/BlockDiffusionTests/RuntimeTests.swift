import XCTest
@testable import BlockDiffusion

final class RuntimeTests: XCTestCase {
    func testCPUFlagsReadable() {
        // Only checks the probe does not crash; the value depends on the machine.
        _ = Runtime.cpuHasAVX512()
    }
}
