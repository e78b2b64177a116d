/*
 * A fake libnvidia-ml.so.1 for gpupool's tests: no GPU needed.
 *
 * It implements the slice of the NVML C API that the gpupool node agent calls, with the
 * same signatures, struct layouts and return codes as the real library, so the tests drive
 * the real pynvml ctypes binding. The GPUs are scripted by a plain-text scenario file named
 * by the environment variable FAKE_NVML_CONFIG, read at nvmlInitWithFlags() and again at
 * fake_nvml_reload() (which tests call through ctypes to change the scenario mid-run).
 *
 * Scenario format, one directive per line, '#' starts a comment:
 *   init_error CODE            nvmlInitWithFlags returns CODE (e.g. 9 = driver not loaded)
 *   count_error CODE           nvmlDeviceGetCount_v2 returns CODE (driver gone mid-run)
 *   driver_version TEXT
 *   gpu                        starts a GPU; the directives below apply to it
 *   mig                        starts a MIG device of the current GPU (enables MIG mode)
 *   name TEXT | uuid TEXT | minor N | gi N | ci N
 *   memory TOTAL USED [RESERVED]     bytes
 *   util GPU_PCT MEM_PCT | power_mw N | temp N | clocks SM_MHZ MEM_MHZ | energy_mj N
 *   gpm GRAPHICS SM OCCUPANCY TENSOR DRAM
 *                              GPM percentages (Hopper and later) of a GPU or MIG device;
 *                              a GPU with this line reports GPM support
 *   mig_mode N                 0 = MIG-capable but disabled (default: not supported)
 *   process PID USED_BYTES
 *   fail FIELD CODE            FIELD in handle name uuid minor memory util power temp
 *                              clock processes mig_mode energy gpm; the call returns CODE
 *   lost                       every call on this device returns GPU_IS_LOST (15)
 *
 * Build: gcc -shared -fPIC -Wl,-soname,libnvidia-ml.so.1 -o libnvidia-ml.so.1 fake_nvml.c
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef int nvmlReturn_t;

#define NVML_SUCCESS 0
#define NVML_ERROR_UNINITIALIZED 1
#define NVML_ERROR_INVALID_ARGUMENT 2
#define NVML_ERROR_NOT_SUPPORTED 3
#define NVML_ERROR_NOT_FOUND 6
#define NVML_ERROR_INSUFFICIENT_SIZE 7
#define NVML_ERROR_DRIVER_NOT_LOADED 9
#define NVML_ERROR_GPU_IS_LOST 15
#define NVML_ERROR_ARGUMENT_VERSION_MISMATCH 25
#define NVML_ERROR_UNKNOWN 999

#define MEMORY_V2_VERSION 0x02000028u
#define NO_INSTANCE 0xFFFFFFFFu
#define MAX_MIG_SLOTS 7
#define MAX_GPUS 16
#define MAX_MIGS (MAX_GPUS * MAX_MIG_SLOTS)
#define MAX_PROCS 32
#define TEXT_LEN 96

enum field {
    F_HANDLE, F_NAME, F_UUID, F_MINOR, F_MEMORY, F_UTIL, F_POWER, F_TEMP, F_CLOCK,
    F_PROCESSES, F_MIG_MODE, F_ENERGY, F_GPM, F_COUNT
};
static const char *const field_names[F_COUNT] = {
    "handle", "name", "uuid", "minor", "memory", "util", "power", "temp", "clock",
    "processes", "mig_mode", "energy", "gpm",
};

typedef struct {
    unsigned int pid;
    unsigned long long used;
} fake_process;

typedef struct fake_device {
    int is_mig;
    struct fake_device *parent;
    char name[TEXT_LEN];
    char uuid[TEXT_LEN];
    unsigned int minor;
    unsigned long long mem_total, mem_used, mem_reserved;
    unsigned int util_gpu, util_mem, power_mw, temp, sm_clock, mem_clock;
    unsigned long long energy_mj;
    int gpm_supported;
    double gpm[5]; /* graphics, SM, occupancy, any tensor, DRAM bandwidth: percent */
    int mig_mode; /* -1: not supported, 0: disabled, 1: enabled */
    unsigned int gi, ci;
    fake_process procs[MAX_PROCS];
    int nprocs;
    struct fake_device *migs[MAX_MIG_SLOTS];
    int nmigs;
    nvmlReturn_t fail[F_COUNT];
} fake_device;

/* Layouts the caller passes in; they must match nvml.h (and pynvml's ctypes structs). */
typedef struct { unsigned long long total, free, used; } nvmlMemory_t;
typedef struct {
    unsigned int version;
    unsigned long long total, reserved, free, used;
} nvmlMemory_v2_t;
typedef struct { unsigned int gpu, memory; } nvmlUtilization_t;
typedef struct {
    unsigned int pid;
    unsigned long long usedGpuMemory;
    unsigned int gpuInstanceId;
    unsigned int computeInstanceId;
} nvmlProcessInfo_t;
_Static_assert(sizeof(nvmlProcessInfo_t) == 24, "process entries are 24 bytes in NVML");

typedef fake_device *nvmlDevice_t;

static fake_device gpus[MAX_GPUS];
static fake_device migs[MAX_MIGS];
static int ngpus, nmig_pool;
static int init_refcount;
static nvmlReturn_t init_error;
static nvmlReturn_t count_error;
static char driver_version[TEXT_LEN] = "550.54.15";

static void reset_device(fake_device *d) {
    memset(d, 0, sizeof(*d));
    d->mig_mode = -1;
    d->gi = NO_INSTANCE;
    d->ci = NO_INSTANCE;
}

static void copy_text(char *dst, const char *src) {
    strncpy(dst, src, TEXT_LEN - 1);
    dst[TEXT_LEN - 1] = '\0';
}

static int field_index(const char *name) {
    for (int i = 0; i < F_COUNT; i++) {
        if (strcmp(field_names[i], name) == 0) return i;
    }
    return -1;
}

static int config_error(const char *path, int line, const char *why) {
    fprintf(stderr, "fake NVML: %s line %d: %s\n", path, line, why);
    return -1;
}

/* Parse the scenario file; returns 0 on success, -1 (after a message on stderr) on error. */
static int load_config(void) {
    ngpus = 0;
    nmig_pool = 0;
    init_error = NVML_SUCCESS;
    count_error = NVML_SUCCESS;
    copy_text(driver_version, "550.54.15");
    const char *path = getenv("FAKE_NVML_CONFIG");
    if (path == NULL || path[0] == '\0') return 0;
    FILE *f = fopen(path, "r");
    if (f == NULL) return config_error(path, 0, "cannot open the scenario file");

    char buf[512];
    int lineno = 0, rc = 0;
    fake_device *gpu = NULL, *dev = NULL;
    while (rc == 0 && fgets(buf, sizeof buf, f) != NULL) {
        lineno++;
        char *hash = strchr(buf, '#');
        if (hash != NULL) *hash = '\0';
        char *key = buf;
        while (*key == ' ' || *key == '\t') key++;
        size_t end = strlen(key);
        while (end > 0 && (key[end - 1] == '\n' || key[end - 1] == ' ' || key[end - 1] == '\t'
                           || key[end - 1] == '\r')) {
            key[--end] = '\0';
        }
        if (*key == '\0') continue;
        char *value = key + strcspn(key, " \t");
        if (*value != '\0') {
            *value++ = '\0';
            while (*value == ' ' || *value == '\t') value++;
        }

        if (strcmp(key, "init_error") == 0) {
            init_error = atoi(value);
        } else if (strcmp(key, "count_error") == 0) {
            count_error = atoi(value);
        } else if (strcmp(key, "driver_version") == 0) {
            copy_text(driver_version, value);
        } else if (strcmp(key, "gpu") == 0) {
            if (ngpus == MAX_GPUS) { rc = config_error(path, lineno, "too many GPUs"); break; }
            gpu = dev = &gpus[ngpus];
            reset_device(gpu);
            gpu->minor = (unsigned int)ngpus;
            ngpus++;
        } else if (dev == NULL) {
            rc = config_error(path, lineno, "device directive before the first 'gpu'");
        } else if (strcmp(key, "mig") == 0) {
            if (gpu->nmigs == MAX_MIG_SLOTS || nmig_pool == MAX_MIGS) {
                rc = config_error(path, lineno, "too many MIG devices");
                break;
            }
            dev = &migs[nmig_pool++];
            reset_device(dev);
            dev->is_mig = 1;
            dev->parent = gpu;
            dev->gi = (unsigned int)gpu->nmigs + 1;
            dev->ci = 0;
            gpu->migs[gpu->nmigs++] = dev;
            gpu->mig_mode = 1;
        } else if (strcmp(key, "name") == 0) {
            copy_text(dev->name, value);
        } else if (strcmp(key, "uuid") == 0) {
            copy_text(dev->uuid, value);
        } else if (strcmp(key, "minor") == 0) {
            dev->minor = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "gi") == 0) {
            dev->gi = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "ci") == 0) {
            dev->ci = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "memory") == 0) {
            dev->mem_reserved = 0;
            if (sscanf(value, "%llu %llu %llu", &dev->mem_total, &dev->mem_used,
                       &dev->mem_reserved) < 2) {
                rc = config_error(path, lineno, "memory needs TOTAL USED [RESERVED]");
            }
        } else if (strcmp(key, "util") == 0) {
            if (sscanf(value, "%u %u", &dev->util_gpu, &dev->util_mem) != 2) {
                rc = config_error(path, lineno, "util needs GPU_PCT MEM_PCT");
            }
        } else if (strcmp(key, "power_mw") == 0) {
            dev->power_mw = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "temp") == 0) {
            dev->temp = (unsigned int)strtoul(value, NULL, 10);
        } else if (strcmp(key, "clocks") == 0) {
            if (sscanf(value, "%u %u", &dev->sm_clock, &dev->mem_clock) != 2) {
                rc = config_error(path, lineno, "clocks needs SM_MHZ MEM_MHZ");
            }
        } else if (strcmp(key, "energy_mj") == 0) {
            dev->energy_mj = strtoull(value, NULL, 10);
        } else if (strcmp(key, "gpm") == 0) {
            if (sscanf(value, "%lf %lf %lf %lf %lf", &dev->gpm[0], &dev->gpm[1], &dev->gpm[2],
                       &dev->gpm[3], &dev->gpm[4]) != 5) {
                rc = config_error(path, lineno, "gpm needs GRAPHICS SM OCCUPANCY TENSOR DRAM");
            }
            gpu->gpm_supported = 1;
        } else if (strcmp(key, "mig_mode") == 0) {
            dev->mig_mode = atoi(value);
        } else if (strcmp(key, "process") == 0) {
            if (dev->nprocs == MAX_PROCS) { rc = config_error(path, lineno, "too many"); break; }
            fake_process *p = &dev->procs[dev->nprocs];
            if (sscanf(value, "%u %llu", &p->pid, &p->used) != 2) {
                rc = config_error(path, lineno, "process needs PID USED_BYTES");
            } else {
                dev->nprocs++;
            }
        } else if (strcmp(key, "fail") == 0) {
            char name[32];
            int code;
            int idx = -1;
            if (sscanf(value, "%31s %d", name, &code) == 2) idx = field_index(name);
            if (idx < 0) {
                rc = config_error(path, lineno, "fail needs a known FIELD and a CODE");
            } else {
                dev->fail[idx] = code;
            }
        } else if (strcmp(key, "lost") == 0) {
            for (int i = 0; i < F_COUNT; i++) dev->fail[i] = NVML_ERROR_GPU_IS_LOST;
        } else {
            rc = config_error(path, lineno, "unknown directive");
        }
    }
    fclose(f);
    return rc;
}

/* Test hook: re-read the scenario without touching the init state. */
int fake_nvml_reload(void) { return load_config(); }

static int valid_handle(const fake_device *d) {
    return (d >= gpus && d < gpus + ngpus) || (d >= migs && d < migs + nmig_pool);
}

/* Common entry check for every device call: library initialised, handle valid, no scripted
 * failure for this field. A lost parent GPU takes its MIG devices with it. */
static nvmlReturn_t check(const fake_device *d, enum field f) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (d == NULL || !valid_handle(d)) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->fail[f] != NVML_SUCCESS) return d->fail[f];
    if (d->parent != NULL && d->parent->fail[f] == NVML_ERROR_GPU_IS_LOST) {
        return NVML_ERROR_GPU_IS_LOST;
    }
    return NVML_SUCCESS;
}

static nvmlReturn_t copy_out(const char *text, char *out, unsigned int length) {
    if (out == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (strlen(text) + 1 > length) return NVML_ERROR_INSUFFICIENT_SIZE;
    strcpy(out, text);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInitWithFlags(unsigned int flags) {
    (void)flags;
    if (load_config() != 0) return NVML_ERROR_UNKNOWN;
    if (init_error != NVML_SUCCESS) return init_error;
    init_refcount++;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlInit_v2(void) { return nvmlInitWithFlags(0); }
nvmlReturn_t nvmlInit(void) { return nvmlInitWithFlags(0); }

nvmlReturn_t nvmlShutdown(void) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    init_refcount--;
    return NVML_SUCCESS;
}

const char *nvmlErrorString(nvmlReturn_t result) {
    switch (result) {
    case NVML_SUCCESS: return "Success";
    case NVML_ERROR_UNINITIALIZED: return "Uninitialized";
    case NVML_ERROR_INVALID_ARGUMENT: return "Invalid Argument";
    case NVML_ERROR_NOT_SUPPORTED: return "Not Supported";
    case NVML_ERROR_NOT_FOUND: return "Not Found";
    case NVML_ERROR_INSUFFICIENT_SIZE: return "Insufficient Size";
    case NVML_ERROR_DRIVER_NOT_LOADED: return "Driver Not Loaded";
    case NVML_ERROR_GPU_IS_LOST: return "GPU is lost";
    default: return "Unknown Error";
    }
}

nvmlReturn_t nvmlSystemGetDriverVersion(char *version, unsigned int length) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    return copy_out(driver_version, version, length);
}

nvmlReturn_t nvmlDeviceGetCount_v2(unsigned int *count) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (count_error != NVML_SUCCESS) return count_error;
    *count = (unsigned int)ngpus;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetHandleByIndex_v2(unsigned int index, nvmlDevice_t *device) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (device == NULL || index >= (unsigned int)ngpus) return NVML_ERROR_INVALID_ARGUMENT;
    if (gpus[index].fail[F_HANDLE] != NVML_SUCCESS) return gpus[index].fail[F_HANDLE];
    *device = &gpus[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetName(nvmlDevice_t d, char *name, unsigned int length) {
    nvmlReturn_t rc = check(d, F_NAME);
    return rc != NVML_SUCCESS ? rc : copy_out(d->name, name, length);
}

nvmlReturn_t nvmlDeviceGetUUID(nvmlDevice_t d, char *uuid, unsigned int length) {
    nvmlReturn_t rc = check(d, F_UUID);
    return rc != NVML_SUCCESS ? rc : copy_out(d->uuid, uuid, length);
}

nvmlReturn_t nvmlDeviceGetMinorNumber(nvmlDevice_t d, unsigned int *minor) {
    nvmlReturn_t rc = check(d, F_MINOR);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    *minor = d->minor;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetIndex(nvmlDevice_t d, unsigned int *index) {
    nvmlReturn_t rc = check(d, F_HANDLE);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    *index = (unsigned int)(d - gpus);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo(nvmlDevice_t d, nvmlMemory_t *memory) {
    nvmlReturn_t rc = check(d, F_MEMORY);
    if (rc != NVML_SUCCESS) return rc;
    /* The v1 call counts the driver's reservation as used. */
    memory->total = d->mem_total;
    memory->used = d->mem_used + d->mem_reserved;
    memory->free = d->mem_total - memory->used;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMemoryInfo_v2(nvmlDevice_t d, nvmlMemory_v2_t *memory) {
    nvmlReturn_t rc = check(d, F_MEMORY);
    if (rc != NVML_SUCCESS) return rc;
    if (memory == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    if (memory->version != MEMORY_V2_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    memory->total = d->mem_total;
    memory->reserved = d->mem_reserved;
    memory->used = d->mem_used;
    memory->free = d->mem_total - d->mem_used - d->mem_reserved;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetUtilizationRates(nvmlDevice_t d, nvmlUtilization_t *util) {
    nvmlReturn_t rc = check(d, F_UTIL);
    if (rc != NVML_SUCCESS) return rc;
    /* As on real hardware, utilisation is not reported while MIG is enabled. */
    if (d->is_mig || d->mig_mode == 1) return NVML_ERROR_NOT_SUPPORTED;
    util->gpu = d->util_gpu;
    util->memory = d->util_mem;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetPowerUsage(nvmlDevice_t d, unsigned int *power) {
    nvmlReturn_t rc = check(d, F_POWER);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    *power = d->power_mw;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTemperature(nvmlDevice_t d, int sensor, unsigned int *temp) {
    nvmlReturn_t rc = check(d, F_TEMP);
    if (rc != NVML_SUCCESS) return rc;
    if (sensor != 0) return NVML_ERROR_INVALID_ARGUMENT;
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    *temp = d->temp;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetClockInfo(nvmlDevice_t d, int type, unsigned int *clock) {
    nvmlReturn_t rc = check(d, F_CLOCK);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig) return NVML_ERROR_NOT_SUPPORTED;
    if (type == 1) {
        *clock = d->sm_clock;
    } else if (type == 2) {
        *clock = d->mem_clock;
    } else {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    return NVML_SUCCESS;
}

/* Fill `out` with the processes of `d` (a parent in MIG mode lists all its instances'). */
static unsigned int collect_processes(const fake_device *d, nvmlProcessInfo_t *out,
                                      unsigned int room) {
    unsigned int n = 0;
    const fake_device *sources[MAX_MIG_SLOTS + 1];
    int nsources = 0;
    sources[nsources++] = d;
    if (!d->is_mig) {
        for (int i = 0; i < d->nmigs; i++) sources[nsources++] = d->migs[i];
    }
    for (int s = 0; s < nsources; s++) {
        const fake_device *src = sources[s];
        for (int i = 0; i < src->nprocs; i++, n++) {
            if (out == NULL || n >= room) continue;
            out[n].pid = src->procs[i].pid;
            out[n].usedGpuMemory = src->procs[i].used;
            out[n].gpuInstanceId = src->is_mig ? src->gi : NO_INSTANCE;
            out[n].computeInstanceId = src->is_mig ? src->ci : NO_INSTANCE;
        }
    }
    return n;
}

nvmlReturn_t nvmlDeviceGetComputeRunningProcesses_v3(nvmlDevice_t d, unsigned int *count,
                                                     nvmlProcessInfo_t *infos) {
    nvmlReturn_t rc = check(d, F_PROCESSES);
    if (rc != NVML_SUCCESS) return rc;
    if (count == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    unsigned int needed = collect_processes(d, NULL, 0);
    /* Size query: like NVML, report the count and ask for a bigger buffer. */
    if (infos == NULL || *count < needed) {
        *count = needed;
        return needed == 0 ? NVML_SUCCESS : NVML_ERROR_INSUFFICIENT_SIZE;
    }
    *count = collect_processes(d, infos, *count);
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigMode(nvmlDevice_t d, unsigned int *current, unsigned int *pending) {
    nvmlReturn_t rc = check(d, F_MIG_MODE);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig || d->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *current = (unsigned int)d->mig_mode;
    *pending = (unsigned int)d->mig_mode;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMaxMigDeviceCount(nvmlDevice_t d, unsigned int *count) {
    nvmlReturn_t rc = check(d, F_MIG_MODE);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig || d->mig_mode < 0) return NVML_ERROR_NOT_SUPPORTED;
    *count = MAX_MIG_SLOTS;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetMigDeviceHandleByIndex(nvmlDevice_t d, unsigned int index,
                                                 nvmlDevice_t *mig) {
    nvmlReturn_t rc = check(d, F_MIG_MODE);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig || mig == NULL || index >= MAX_MIG_SLOTS) return NVML_ERROR_INVALID_ARGUMENT;
    if (index >= (unsigned int)d->nmigs) return NVML_ERROR_NOT_FOUND;
    if (d->migs[index]->fail[F_HANDLE] != NVML_SUCCESS) return d->migs[index]->fail[F_HANDLE];
    *mig = d->migs[index];
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceIsMigDeviceHandle(nvmlDevice_t d, unsigned int *is_mig) {
    nvmlReturn_t rc = check(d, F_HANDLE);
    if (rc != NVML_SUCCESS) return rc;
    *is_mig = (unsigned int)d->is_mig;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetGpuInstanceId(nvmlDevice_t d, unsigned int *id) {
    nvmlReturn_t rc = check(d, F_HANDLE);
    if (rc != NVML_SUCCESS) return rc;
    if (!d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->gi;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetComputeInstanceId(nvmlDevice_t d, unsigned int *id) {
    nvmlReturn_t rc = check(d, F_HANDLE);
    if (rc != NVML_SUCCESS) return rc;
    if (!d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    *id = d->ci;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetDeviceHandleFromMigDeviceHandle(nvmlDevice_t d, nvmlDevice_t *parent) {
    nvmlReturn_t rc = check(d, F_HANDLE);
    if (rc != NVML_SUCCESS) return rc;
    if (!d->is_mig || parent == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *parent = d->parent;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlDeviceGetTotalEnergyConsumption(nvmlDevice_t d, unsigned long long *energy) {
    nvmlReturn_t rc = check(d, F_ENERGY);
    if (rc != NVML_SUCCESS) return rc;
    if (d->is_mig || energy == NULL) return NVML_ERROR_NOT_SUPPORTED;
    *energy = d->energy_mj;
    return NVML_SUCCESS;
}

/* -- GPM (GPU performance monitoring, Hopper and later) ----------------------------------- */

#define GPM_SUPPORT_VERSION 1u
#define GPM_METRICS_GET_VERSION 1u
#define GPM_GRAPHICS_UTIL 1u
#define GPM_SM_UTIL 2u
#define GPM_SM_OCCUPANCY 3u
#define GPM_ANY_TENSOR_UTIL 5u
#define GPM_DRAM_BW_UTIL 10u

typedef struct { unsigned int version, isSupportedDevice; } nvmlGpmSupport_t;

typedef struct {
    const fake_device *device; /* the GPU, or the MIG device of the instance */
    unsigned long long taken;  /* 0 until filled; then the order in which samples were taken */
} fake_gpm_sample;
typedef fake_gpm_sample *nvmlGpmSample_t;

typedef struct {
    unsigned int metricId;
    nvmlReturn_t nvmlReturn;
    double value;
    struct { const char *shortName, *longName, *unit; } metricInfo;
} nvmlGpmMetric_t;
typedef struct {
    unsigned int version;
    unsigned int numMetrics;
    nvmlGpmSample_t sample1;
    nvmlGpmSample_t sample2;
    nvmlGpmMetric_t metrics[]; /* numMetrics entries; the caller sizes the array */
} nvmlGpmMetricsGet_t;

static unsigned long long gpm_clock;

nvmlReturn_t nvmlGpmQueryDeviceSupport(nvmlDevice_t d, nvmlGpmSupport_t *support) {
    nvmlReturn_t rc = check(d, F_GPM);
    if (rc != NVML_SUCCESS) return rc;
    if (support == NULL || d->is_mig) return NVML_ERROR_INVALID_ARGUMENT;
    if (support->version != GPM_SUPPORT_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    support->isSupportedDevice = (unsigned int)d->gpm_supported;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleAlloc(nvmlGpmSample_t *sample) {
    if (sample == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    *sample = calloc(1, sizeof(fake_gpm_sample));
    return *sample == NULL ? NVML_ERROR_UNKNOWN : NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleFree(nvmlGpmSample_t sample) {
    free(sample);
    return NVML_SUCCESS;
}

static nvmlReturn_t take_sample(const fake_device *d, nvmlGpmSample_t sample) {
    nvmlReturn_t rc = check(d, F_GPM);
    if (rc != NVML_SUCCESS) return rc;
    if (sample == NULL) return NVML_ERROR_INVALID_ARGUMENT;
    const fake_device *gpu = d->is_mig ? d->parent : d;
    if (!gpu->gpm_supported) return NVML_ERROR_NOT_SUPPORTED;
    sample->device = d;
    sample->taken = ++gpm_clock;
    return NVML_SUCCESS;
}

nvmlReturn_t nvmlGpmSampleGet(nvmlDevice_t d, nvmlGpmSample_t sample) {
    /* A whole-GPU sample is not available while MIG is on: samples are per GPU instance. */
    if (d != NULL && valid_handle(d) && d->mig_mode == 1) return NVML_ERROR_NOT_SUPPORTED;
    return take_sample(d, sample);
}

nvmlReturn_t nvmlGpmMigSampleGet(nvmlDevice_t d, unsigned int gpu_instance_id,
                                 nvmlGpmSample_t sample) {
    nvmlReturn_t rc = check(d, F_GPM);
    if (rc != NVML_SUCCESS) return rc;
    for (int i = 0; i < d->nmigs; i++) {
        if (d->migs[i]->gi == gpu_instance_id) return take_sample(d->migs[i], sample);
    }
    return NVML_ERROR_NOT_FOUND;
}

nvmlReturn_t nvmlGpmMetricsGet(nvmlGpmMetricsGet_t *request) {
    if (init_refcount == 0) return NVML_ERROR_UNINITIALIZED;
    if (request == NULL || request->sample1 == NULL || request->sample2 == NULL) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    if (request->version != GPM_METRICS_GET_VERSION) return NVML_ERROR_ARGUMENT_VERSION_MISMATCH;
    const fake_gpm_sample *a = request->sample1, *b = request->sample2;
    /* Two samples of the same device, taken in order: anything else is a caller bug. */
    if (!a->taken || !b->taken || a->device != b->device || a->taken >= b->taken) {
        return NVML_ERROR_INVALID_ARGUMENT;
    }
    for (unsigned int i = 0; i < request->numMetrics; i++) {
        nvmlGpmMetric_t *m = &request->metrics[i];
        int slot = -1;
        switch (m->metricId) {
        case GPM_GRAPHICS_UTIL: slot = 0; break;
        case GPM_SM_UTIL: slot = 1; break;
        case GPM_SM_OCCUPANCY: slot = 2; break;
        case GPM_ANY_TENSOR_UTIL: slot = 3; break;
        case GPM_DRAM_BW_UTIL: slot = 4; break;
        default: break;
        }
        m->metricInfo.shortName = "fake";
        m->metricInfo.longName = "fake GPM metric";
        m->metricInfo.unit = "%";
        m->nvmlReturn = slot < 0 ? NVML_ERROR_NOT_SUPPORTED : NVML_SUCCESS;
        m->value = slot < 0 ? 0.0 : b->device->gpm[slot];
    }
    return NVML_SUCCESS;
}
