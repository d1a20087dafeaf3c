/*
 * tests/oclgrind_whole_writes.c: a preload library for `make check-kernels`
 * (tests/check_kernels.sh) that turns every host-side store into a buffer
 * (write, fill, copy, a write mapping) into a store of the whole buffer,
 * so that Oclgrind's uninitialised-memory checker keeps a correct shadow.
 *
 * Why: Oclgrind's Uninitialized plugin (21.10, and unchanged in 26.03.1)
 * handles a host store of `size` bytes at `address` as
 * ShadowMemory::allocate(address, size) + store: the buffer's whole shadow
 * is replaced by a new one of `size` bytes, left uninitialised
 * (`new unsigned char[size]`), and the clean store is skipped when the
 * offset is not 0 (offset + size > size).  So writing floats [2, 1005) of a
 * 1010-float buffer, which tests/check_ops's optimizer case does, makes the
 * reads of floats 1003 and 1004 "uninitialized" (beyond the new shadow)
 * and the others depend on heap garbage: the "uninitialized value written"
 * findings in mpt_sgd_momentum and mpt_adamw were these, not kernel bugs.
 * Fills store pattern by pattern (a shadow of 4 bytes), copies and write
 * mappings go through the same path.
 *
 * What it does: a partial write, fill or copy becomes read-whole-buffer,
 * patch on the host, write-whole-buffer (blocking); a mapping for writing
 * is made for reading too (a read mapping leaves the shadow alone) and,
 * once unmapped, the whole buffer is read and written back.  The cost in
 * checking power: a buffer the host stores into even in part counts as
 * initialised everywhere; buffers only kernels write (workspaces,
 * activations, CLBlast's temporaries) keep byte-exact shadows, and kernel
 * stores are unaffected.  Must come before Oclgrind's runtime in
 * LD_PRELOAD (check_kernels.sh sets both), so that its symbols win and
 * RTLD_NEXT finds Oclgrind's.  Test tooling only: never linked into mpt.
 *
 * It also ends the process before library destructors run (exit_now).
 */
#define _GNU_SOURCE /* RTLD_NEXT, on_exit */
#define CL_TARGET_OPENCL_VERSION 120
#include <dlfcn.h> /* dlsym, RTLD_NEXT */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h> /* _exit */

#include <CL/cl.h>

#define REAL(name) ((name##_fn)real(#name))
typedef cl_int (*clEnqueueWriteBuffer_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t,
                                          const void *, cl_uint, const cl_event *, cl_event *);
typedef cl_int (*clEnqueueReadBuffer_fn)(cl_command_queue, cl_mem, cl_bool, size_t, size_t,
                                         void *, cl_uint, const cl_event *, cl_event *);
typedef void *(*clEnqueueMapBuffer_fn)(cl_command_queue, cl_mem, cl_bool, cl_map_flags, size_t,
                                       size_t, cl_uint, const cl_event *, cl_event *, cl_int *);
typedef cl_int (*clEnqueueUnmapMemObject_fn)(cl_command_queue, cl_mem, void *, cl_uint,
                                             const cl_event *, cl_event *);

static void *real(const char *name)
{
    void *f = dlsym(RTLD_NEXT, name);
    if (!f)
        abort(); /* preloaded without an OpenCL runtime after it */
    return f;
}

/* A process that used CLBlast under Oclgrind aborts when CLBlast's
 * programs are released: CLBlast keeps them in a static cache emptied by
 * its library destructor at exit, and the release ends in
 * llvm::Module::~Module (LLVM 14, via oclgrind::Program), where glibc
 * finds the heap corrupted ("corrupted double-linked list", after every
 * test had passed; CLBlastClearCache() from an exit handler aborts the
 * same way, so it is not the order of the destructors).  mpt's own
 * programs, released while the tests run, do not.  So the process ends
 * in an exit handler registered at the first OpenCL call seen here
 * (during main, so it runs before the library destructors): stdio
 * flushed, the exit status kept, the destructors skipped. */
static void exit_now(int status, void *arg)
{
    (void)arg;
    fflush(NULL);
    _exit(status);
}

static void register_exit(void)
{
    on_exit(exit_now, NULL);
}

/* Called by every entry point: the first registers the exit handler (from
 * main's time, not from this library's constructor, whose handlers would
 * run among the library destructors). */
static void hooked(void)
{
    static pthread_once_t once = PTHREAD_ONCE_INIT;
    pthread_once(&once, register_exit);
}

/* The buffer that owns `mem`'s bytes, and where they start in it (a
 * sub-buffer shares its parent's shadow). */
static cl_mem owner(cl_mem mem, size_t *origin)
{
    cl_mem parent = NULL;
    size_t off = 0;
    *origin = 0;
    if (clGetMemObjectInfo(mem, CL_MEM_ASSOCIATED_MEMOBJECT, sizeof parent, &parent, NULL) ==
            CL_SUCCESS &&
        parent &&
        clGetMemObjectInfo(mem, CL_MEM_OFFSET, sizeof off, &off, NULL) == CL_SUCCESS) {
        *origin = off;
        return parent;
    }
    return mem;
}

static size_t size_of(cl_mem mem)
{
    size_t size = 0;
    clGetMemObjectInfo(mem, CL_MEM_SIZE, sizeof size, &size, NULL);
    return size;
}

/* Reads the whole of `mem`'s owner after the wait list; the caller patches
 * the copy and passes it to write_whole. */
static unsigned char *read_whole(cl_command_queue q, cl_mem mem, size_t *origin, size_t *size,
                                 cl_mem *whole, cl_uint nwait, const cl_event *wait,
                                 cl_int *err)
{
    *whole = owner(mem, origin);
    *size = size_of(*whole);
    unsigned char *host = malloc(*size ? *size : 1);
    if (!host) {
        *err = CL_OUT_OF_HOST_MEMORY;
        return NULL;
    }
    *err = REAL(clEnqueueReadBuffer)(q, *whole, CL_TRUE, 0, *size, host, nwait, wait, NULL);
    if (*err != CL_SUCCESS) {
        free(host);
        return NULL;
    }
    return host;
}

static cl_int write_whole(cl_command_queue q, cl_mem whole, size_t size, unsigned char *host,
                          cl_event *ev)
{
    cl_int err = REAL(clEnqueueWriteBuffer)(q, whole, CL_TRUE, 0, size, host, 0, NULL, ev);
    free(host);
    return err;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueWriteBuffer(cl_command_queue q, cl_mem mem,
                                                     cl_bool blocking, size_t offset,
                                                     size_t size, const void *ptr,
                                                     cl_uint nwait, const cl_event *wait,
                                                     cl_event *ev)
{
    size_t origin, whole_size;
    cl_mem whole;
    cl_int err;
    hooked();
    if (owner(mem, &origin) == mem && offset == 0 && size == size_of(mem))
        return REAL(clEnqueueWriteBuffer)(q, mem, blocking, offset, size, ptr, nwait, wait, ev);
    if (offset + size > size_of(mem)) /* let the runtime report the misuse */
        return REAL(clEnqueueWriteBuffer)(q, mem, blocking, offset, size, ptr, nwait, wait, ev);
    unsigned char *host = read_whole(q, mem, &origin, &whole_size, &whole, nwait, wait, &err);
    if (!host)
        return err;
    memcpy(host + origin + offset, ptr, size);
    return write_whole(q, whole, whole_size, host, ev);
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueFillBuffer(cl_command_queue q, cl_mem mem,
                                                    const void *pattern, size_t pattern_size,
                                                    size_t offset, size_t size, cl_uint nwait,
                                                    const cl_event *wait, cl_event *ev)
{
    size_t origin, whole_size;
    cl_mem whole;
    cl_int err;
    hooked();
    if (!pattern || pattern_size == 0 || size % pattern_size || offset + size > size_of(mem)) {
        typedef cl_int (*fill_fn)(cl_command_queue, cl_mem, const void *, size_t, size_t, size_t,
                                  cl_uint, const cl_event *, cl_event *);
        return ((fill_fn)real("clEnqueueFillBuffer"))(q, mem, pattern, pattern_size, offset, size,
                                                      nwait, wait, ev);
    }
    unsigned char *host = read_whole(q, mem, &origin, &whole_size, &whole, nwait, wait, &err);
    if (!host)
        return err;
    for (size_t i = 0; i < size; i += pattern_size)
        memcpy(host + origin + offset + i, pattern, pattern_size);
    return write_whole(q, whole, whole_size, host, ev);
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueCopyBuffer(cl_command_queue q, cl_mem src, cl_mem dst,
                                                    size_t src_offset, size_t dst_offset,
                                                    size_t size, cl_uint nwait,
                                                    const cl_event *wait, cl_event *ev)
{
    size_t origin, whole_size;
    cl_mem whole;
    cl_int err;
    hooked();
    if (src_offset + size > size_of(src) || dst_offset + size > size_of(dst)) {
        typedef cl_int (*copy_fn)(cl_command_queue, cl_mem, cl_mem, size_t, size_t, size_t,
                                  cl_uint, const cl_event *, cl_event *);
        return ((copy_fn)real("clEnqueueCopyBuffer"))(q, src, dst, src_offset, dst_offset, size,
                                                      nwait, wait, ev);
    }
    unsigned char *host = read_whole(q, dst, &origin, &whole_size, &whole, nwait, wait, &err);
    if (!host)
        return err;
    err = REAL(clEnqueueReadBuffer)(q, src, CL_TRUE, src_offset, size, host + origin + dst_offset,
                                    0, NULL, NULL);
    if (err != CL_SUCCESS) {
        free(host);
        return err;
    }
    return write_whole(q, whole, whole_size, host, ev);
}

/* Mappings for writing, remembered until their unmap (a short list: mpt
 * maps a few buffers at a time). */
typedef struct mapping {
    void *ptr;
    cl_mem mem;
    struct mapping *next;
} mapping;
static mapping *mappings;
static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;

CL_API_ENTRY void *CL_API_CALL clEnqueueMapBuffer(cl_command_queue q, cl_mem mem, cl_bool blocking,
                                                  cl_map_flags flags, size_t offset, size_t size,
                                                  cl_uint nwait, const cl_event *wait,
                                                  cl_event *ev, cl_int *err)
{
    int writes = (flags & (CL_MAP_WRITE | CL_MAP_WRITE_INVALIDATE_REGION)) != 0;
    hooked();
    if (flags & CL_MAP_WRITE_INVALIDATE_REGION) /* exclusive with READ */
        flags = (flags & ~(cl_map_flags)CL_MAP_WRITE_INVALIDATE_REGION) | CL_MAP_WRITE;
    void *ptr = REAL(clEnqueueMapBuffer)(q, mem, blocking, flags | CL_MAP_READ, offset, size,
                                         nwait, wait, ev, err);
    mapping *m;
    if (ptr && writes && (m = malloc(sizeof *m))) {
        m->ptr = ptr, m->mem = mem;
        pthread_mutex_lock(&lock);
        m->next = mappings, mappings = m;
        pthread_mutex_unlock(&lock);
    }
    return ptr;
}

CL_API_ENTRY cl_int CL_API_CALL clEnqueueUnmapMemObject(cl_command_queue q, cl_mem mem, void *ptr,
                                                        cl_uint nwait, const cl_event *wait,
                                                        cl_event *ev)
{
    mapping *found = NULL;
    pthread_mutex_lock(&lock);
    for (mapping **p = &mappings; *p; p = &(*p)->next)
        if ((*p)->ptr == ptr && (*p)->mem == mem) {
            found = *p, *p = found->next;
            break;
        }
    pthread_mutex_unlock(&lock);
    cl_int err = REAL(clEnqueueUnmapMemObject)(q, mem, ptr, nwait, wait, found ? NULL : ev);
    if (!found || err != CL_SUCCESS) {
        free(found);
        return err;
    }
    free(found);
    /* The host wrote through the mapping: store the whole buffer back. */
    size_t origin, whole_size;
    cl_mem whole;
    unsigned char *host = read_whole(q, mem, &origin, &whole_size, &whole, 0, NULL, &err);
    return host ? write_whole(q, whole, whole_size, host, ev) : err;
}
