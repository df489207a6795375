/*
 * Stand-in for Windows' bcryptprimitives.dll, which Wine 8 does not ship.
 *
 * Every Rust program since Rust 1.78 imports ProcessPrng from bcryptprimitives.dll to seed
 * its hash maps; without this DLL in the Wine prefix each test exe exits with code 53 before
 * printing anything. Only used to run tests under Wine, never shipped.
 */
#include <windows.h>

/* RtlGenRandom, exported by advapi32 under this name. */
BOOLEAN WINAPI SystemFunction036(PVOID buffer, ULONG length);

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T length)
{
    /* RtlGenRandom takes a ULONG length: fill larger requests in slices. */
    while (length > 0) {
        ULONG slice = length > 0x40000000 ? 0x40000000 : (ULONG)length;
        if (!SystemFunction036(data, slice)) {
            return FALSE;
        }
        data += slice;
        length -= slice;
    }
    /* The real ProcessPrng is documented to always return TRUE. */
    return TRUE;
}
