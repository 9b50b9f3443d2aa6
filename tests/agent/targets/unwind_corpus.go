// Ground truth for the unwinding tests: a Go program (Go keeps frame pointers and writes
// .debug_frame) calling its probed leaf through two chains of ten functions each, on the
// main goroutine. argv: CALLS [GOFILE], as unwind_corpus.c: one warm-up call, then (with
// GOFILE) "warm" and a wait for the file, then CALLS calls per chain, then a moment's stay.
package main

import (
	"fmt"
	"os"
	"strconv"
	"time"
)

var sink uint64

//go:noinline
func leaf(n uint64) uint64 {
	h := n ^ 0x9e3779b97f4a7c15
	for i := uint64(0); i < 64; i++ {
		h = (h<<5 | h>>59) ^ i*0x100000001b3
	}
	sink += h
	return h
}

//go:noinline
func a10(n uint64) uint64 { r := leaf(n + 1); sink += r; return r + n }

//go:noinline
func a9(n uint64) uint64 { r := a10(n + 1); sink += r; return r + n }

//go:noinline
func a8(n uint64) uint64 { r := a9(n + 1); sink += r; return r + n }

//go:noinline
func a7(n uint64) uint64 { r := a8(n + 1); sink += r; return r + n }

//go:noinline
func a6(n uint64) uint64 { r := a7(n + 1); sink += r; return r + n }

//go:noinline
func a5(n uint64) uint64 { r := a6(n + 1); sink += r; return r + n }

//go:noinline
func a4(n uint64) uint64 { r := a5(n + 1); sink += r; return r + n }

//go:noinline
func a3(n uint64) uint64 { r := a4(n + 1); sink += r; return r + n }

//go:noinline
func a2(n uint64) uint64 { r := a3(n + 1); sink += r; return r + n }

//go:noinline
func a1(n uint64) uint64 { r := a2(n + 1); sink += r; return r + n }

//go:noinline
func b10(n uint64) uint64 { r := leaf(n + 1); sink += r; return r + n }

//go:noinline
func b9(n uint64) uint64 { r := b10(n + 1); sink += r; return r + n }

//go:noinline
func b8(n uint64) uint64 { r := b9(n + 1); sink += r; return r + n }

//go:noinline
func b7(n uint64) uint64 { r := b8(n + 1); sink += r; return r + n }

//go:noinline
func b6(n uint64) uint64 { r := b7(n + 1); sink += r; return r + n }

//go:noinline
func b5(n uint64) uint64 { r := b6(n + 1); sink += r; return r + n }

//go:noinline
func b4(n uint64) uint64 { r := b5(n + 1); sink += r; return r + n }

//go:noinline
func b3(n uint64) uint64 { r := b4(n + 1); sink += r; return r + n }

//go:noinline
func b2(n uint64) uint64 { r := b3(n + 1); sink += r; return r + n }

//go:noinline
func b1(n uint64) uint64 { r := b2(n + 1); sink += r; return r + n }

func main() {
	calls, err := strconv.Atoi(os.Args[1])
	if err != nil {
		panic(err)
	}
	total := leaf(7)
	if len(os.Args) > 2 {
		fmt.Println("warm")
		for i := 0; i < 2400; i++ {
			if _, err := os.Stat(os.Args[2]); err == nil {
				break
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	for i := 0; i < calls; i++ {
		total += a1(uint64(i))
	}
	for i := 0; i < calls; i++ {
		total += b1(uint64(i))
	}
	fmt.Println(total)
	if len(os.Args) > 2 {
		time.Sleep(time.Second)
	}
}
