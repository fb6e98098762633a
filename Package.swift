// swift-tools-version:6.0
// BD3-LM toolkit: one library holding all logic, thin executables over it.
import PackageDescription

let argumentParser: Target.Dependency = .product(name: "ArgumentParser", package: "swift-argument-parser")

let package = Package(
    name: "bd3",
    platforms: [.macOS(.v13)],
    products: [
        .library(name: "BlockDiffusion", targets: ["BlockDiffusion"]),
        .executable(name: "tokenize", targets: ["tokenize"]),
        .executable(name: "pack-blocks", targets: ["pack-blocks"]),
        .executable(name: "train", targets: ["train"]),
        .executable(name: "score", targets: ["score"]),
        .executable(name: "draft", targets: ["draft"]),
        .executable(name: "remask", targets: ["remask"]),
        .executable(name: "refine", targets: ["refine"]),
        .executable(name: "bench-train", targets: ["bench-train"]),
        .executable(name: "bench-sampling-ckpt", targets: ["bench-sampling-ckpt"]),
        .executable(name: "bench-approx-cache", targets: ["bench-approx-cache"]),
        .executable(name: "bench-engine-forward", targets: ["bench-engine-forward"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.5.0"),
    ],
    targets: [
        // C libraries, found through pkg-config.
        .systemLibrary(name: "CZstd", pkgConfig: "libzstd",
                       providers: [.apt(["libzstd-dev"]), .brew(["zstd"])]),
        .systemLibrary(name: "COpenBLAS", pkgConfig: "openblas",
                       providers: [.apt(["libopenblas-dev"]), .brew(["openblas"])]),

        // Small-M inference products (fp32 / bf16 weights) with runtime CPU dispatch; see include/bd3kernels.h.
        .target(name: "CKernels", cSettings: [.unsafeFlags(["-O3"])], linkerSettings: [.linkedLibrary("m")]),

        .target(name: "BlockDiffusion",
                dependencies: ["CZstd", "COpenBLAS", "CKernels"]),

        // The tools' shared side: runTool (exit codes, BD3_PARSE_ONLY) and the option groups. Swift 5 mode:
        // runTool checks C's `stdout` stream, a global Swift 6 refuses to touch.
        .target(name: "ToolOptions", dependencies: ["BlockDiffusion", argumentParser],
                swiftSettings: [.swiftLanguageMode(.v5)]),

        .executableTarget(name: "tokenize", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "pack-blocks", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "train", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "score", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "draft", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "remask", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        .executableTarget(name: "refine", dependencies: ["BlockDiffusion", "ToolOptions", argumentParser]),
        // Training throughput benchmark of the model; see docs/benchmarks.md.
        .executableTarget(name: "bench-train", dependencies: ["BlockDiffusion", "COpenBLAS"], path: "bench/train"),
        // Random-weight checkpoints for the sampling benchmark (bench/sampling/run.sh).
        .executableTarget(name: "bench-sampling-ckpt", dependencies: ["BlockDiffusion"], path: "bench/sampling/ckpt"),
        .executableTarget(name: "bench-approx-cache", dependencies: ["BlockDiffusion", argumentParser], path: "bench/sampling/approx"),
        // Where one cached sampling forward's time goes (docs/benchmarks.md).
        .executableTarget(name: "bench-engine-forward", dependencies: ["BlockDiffusion", "CKernels", argumentParser], path: "bench/sampling/forward",
                          swiftSettings: [.swiftLanguageMode(.v5)]),   // concurrentPerform over raw pointers

        .testTarget(name: "BlockDiffusionTests", dependencies: ["BlockDiffusion"],
                    resources: [.copy("Fixtures")]),
    ]
)
