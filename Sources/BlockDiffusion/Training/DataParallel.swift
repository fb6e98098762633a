// Data-parallel training over Open MPI (`mpirun -np N train …`), with libmpi loaded at run time.
//
// `train` links no MPI library: a process started by Open MPI's mpirun (it exports OMPI_COMM_WORLD_SIZE)
// dlopens libmpi and looks up the handful of functions and predefined handles it needs (in Open MPI,
// MPI_COMM_WORLD, MPI_FLOAT, MPI_SUM… are the addresses of exported objects such as `ompi_mpi_comm_world`).
// So single-process `train` needs no MPI installed, and the same binary joins a job when launched by mpirun.
//
// What the ranks do (Trainer.trainStep): a step is `accumulate × N` micro-batches of `--batch` rows, drawn
// from the one shuffled order and one seed stream every rank walks identically; rank r runs micro-batches
// k ≡ r (mod N) only. Gradients are summed with one MPI_Allreduce over the flat gradient buffer, so every
// rank applies the same update. Hence `mpirun -np N … --accumulate A` equals one process with
// `--accumulate A·N` up to the order of the fp32 gradient sums (see docs/training.md).
import Foundation
#if canImport(Glibc)
import Glibc
#endif

public final class World: @unchecked Sendable {
    public let rank: Int
    public let size: Int
    public var isLeader: Bool { rank == 0 }

    typealias Allreduce = @convention(c) (UnsafeRawPointer?, UnsafeMutableRawPointer?, Int32,
                                          UnsafeMutableRawPointer?, UnsafeMutableRawPointer?, UnsafeMutableRawPointer?) -> Int32
    typealias Abort = @convention(c) (UnsafeMutableRawPointer?, Int32) -> Int32
    typealias Finalize = @convention(c) () -> Int32

    private let allreduce: Allreduce
    private let abortFn: Abort
    private let finalizeFn: Finalize
    private let comm, float, double, sum, max: UnsafeMutableRawPointer
    /// Open MPI's MPI_IN_PLACE.
    private let inPlace = UnsafeRawPointer(bitPattern: 1)

    /// The job this process belongs to: nil outside mpirun; joined once (MPI_Init) on first use.
    public static func join() throws -> World? {
        if let w = joined { return w }
        let env = ProcessInfo.processInfo.environment
        guard env["OMPI_COMM_WORLD_SIZE"] != nil else {
            if env["PMI_SIZE"] != nil || env["PMI_RANK"] != nil {
                throw ToolError("started by a non-Open MPI launcher (PMI_SIZE is set); data-parallel train supports Open MPI's mpirun (Debian: openmpi-bin libopenmpi3)")
            }
            return nil
        }
        let w = try World()
        joined = w
        return w
    }
    nonisolated(unsafe) private static var joined: World?

    private init() throws {
        var lib: UnsafeMutableRawPointer? = nil
        for name in ["libmpi.so.40", "libmpi.so"] where lib == nil {
            // RTLD_GLOBAL: Open MPI's components (dlopened by libmpi itself) resolve symbols against it.
            lib = dlopen(name, RTLD_NOW | RTLD_GLOBAL)
        }
        guard let lib else {
            let why = dlerror().map { String(cString: $0) } ?? "not found"
            throw ToolError("started by mpirun but libmpi could not be loaded (\(why)); install Open MPI (Debian: openmpi-bin libopenmpi3)")
        }
        func sym(_ s: String) throws -> UnsafeMutableRawPointer {
            guard let p = dlsym(lib, s) else { throw ToolError("libmpi has no symbol \(s): data-parallel train needs Open MPI 4 or newer") }
            return p
        }
        typealias Init = @convention(c) (UnsafeMutablePointer<Int32>?, UnsafeMutablePointer<UnsafeMutablePointer<UnsafeMutablePointer<CChar>?>?>?) -> Int32
        typealias CommQuery = @convention(c) (UnsafeMutableRawPointer?, UnsafeMutablePointer<Int32>?) -> Int32
        let initFn = unsafeBitCast(try sym("MPI_Init"), to: Init.self)
        let rankFn = unsafeBitCast(try sym("MPI_Comm_rank"), to: CommQuery.self)
        let sizeFn = unsafeBitCast(try sym("MPI_Comm_size"), to: CommQuery.self)
        allreduce = unsafeBitCast(try sym("MPI_Allreduce"), to: Allreduce.self)
        abortFn = unsafeBitCast(try sym("MPI_Abort"), to: Abort.self)
        finalizeFn = unsafeBitCast(try sym("MPI_Finalize"), to: Finalize.self)
        comm = try sym("ompi_mpi_comm_world"); float = try sym("ompi_mpi_float"); double = try sym("ompi_mpi_double")
        sum = try sym("ompi_mpi_op_sum"); max = try sym("ompi_mpi_op_max")
        guard initFn(nil, nil) == 0 else { throw ToolError("MPI_Init failed; check the mpirun command line and the Open MPI installation") }
        var r: Int32 = 0, n: Int32 = 0
        _ = rankFn(comm, &r); _ = sizeFn(comm, &n)
        rank = Int(r); size = Int(n)
    }

    /// In place: every rank ends with the element-wise sum over all ranks (one MPI_Allreduce).
    public func sumInPlace(_ x: UnsafeMutableBufferPointer<Float>) {
        precondition(x.count <= Int(Int32.max))
        check(allreduce(inPlace, x.baseAddress, Int32(x.count), float, sum, comm), "MPI_Allreduce")
    }

    public func sum(_ values: [Double]) -> [Double] {
        var v = values
        v.withUnsafeMutableBufferPointer { check(allreduce(inPlace, $0.baseAddress, Int32($0.count), double, sum, comm), "MPI_Allreduce") }
        return v
    }

    public func max(_ value: Double) -> Double {
        var v = value
        check(allreduce(inPlace, &v, 1, double, max, comm), "MPI_Allreduce")
        return v
    }

    private func check(_ rc: Int32, _ what: String) {
        // Open MPI's default error handler already aborts the job; this covers a handler set to return codes.
        if rc != 0 { stop("\(what) failed with MPI error \(rc)", code: 1) }
    }

    /// Stops the whole job: this rank's message on stderr, then MPI_Abort (mpirun ends the other ranks).
    public func stop(_ message: String, code: Int32) -> Never {
        FileHandle.standardError.write(Data("train: rank \(rank) of \(size): \(message); stopping the job\n".utf8))
        _ = abortFn(comm, code)
        exit(code)
    }

    /// Normal end of the job on every rank.
    public func finish() { _ = finalizeFn() }
}
