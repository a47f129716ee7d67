package main

import "runtime/debug"

// gcPercent is stellar-appd's GOGC when the environment sets none. An idle
// node's appd keeps about 1.5 MB of live heap; Go's default (100) lets the heap
// grow to 4 MB between collections, and the pages it touched stay resident.
// 50 halves that headroom for a few more collections of a small heap (about
// one every 10 s when idle, each well under a millisecond). See README.md,
// Memory.
const gcPercent = 50

// releaseInitHeap collects and hands back to the kernel the heap the package
// initialisers left behind. The log driver runs once per container (20
// containers, 20 drivers) and needs a few hundred KiB, but it is this
// binary, so every initialiser of the daemon's dependencies (containerd's
// client, protobuf registries, regular expressions) runs first and leaves
// ~2 MB of heap, mostly garbage, that Go would keep mapped.
func releaseInitHeap() {
	debug.FreeOSMemory()
}
