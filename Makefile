# Makefile — one flat build for bora: the library, the three executables, tests, benches, fuzz targets.
# Overridable: CC, NVCC, CUDA (auto|0|1), CUDA_ARCH, BUILD, O (optimisation flags), SAN (sanitizers),
# MEGA_DIAG (0|1: the persistent decode kernel's trace and debug switches).

CC        ?= cc
NVCC      ?= $(shell command -v nvcc 2>/dev/null || ls /usr/local/cuda/bin/nvcc 2>/dev/null)
CUDA      ?= auto
CUDA_HOME ?= $(patsubst %/bin/nvcc,%,$(NVCC))
CUDA_ARCH ?= -gencode arch=compute_90a,code=sm_90a
BUILD     ?= build
O         ?= -O2

ifeq ($(CUDA),auto)
  CUDA := $(if $(NVCC),1,0)
endif

# SAN=address,undefined or SAN=thread: a sanitizer build of the C code (give it its own BUILD
# directory). Its executables run on the sanitizer's allocator instead of jemalloc, so the
# jemalloc checks (test_jemalloc, e2e_jemalloc, e2e_console_borad's figures) and the RSS bound of
# test_load fail there by design: `make test SAN=address,undefined` read 244 passed, those 4 failed.
SAN ?=
# UBSan reports fail the test (no recovery); GCC's -Wtsan (fences it cannot model) is not an error.
SANFLAGS = $(if $(SAN),-fsanitize=$(SAN) -fno-sanitize-recover=all -fno-omit-frame-pointer \
             $(if $(findstring thread,$(SAN)),$(shell $(CC) -Werror -Wno-tsan -E -x c /dev/null >/dev/null 2>&1 && echo -Wno-tsan)))
JEMALLOC = $(if $(SAN),,-ljemalloc)
CFLAGS_BASE = -std=c11 -D_GNU_SOURCE $(O) $(SANFLAGS) -g -Wall -Wextra -Werror -MMD -MP -I. -pthread -fopenmp
CFLAGS     += $(CFLAGS_BASE)
LDLIBS_LIB  = -linih -ljansson -lpcre2-8 -lsodium -luring -lm -lpthread -fopenmp
# MEGA_DIAG=1: the persistent decode kernel with its diagnostics (BORA_MEGA_TRACE, BORA_MEGA_DEBUG;
# docs/PERFORMANCE_GPU.md), 2-4 % slower on 7B; give it its own BUILD directory (make does not
# rebuild on a changed variable). The default build refuses both.
MEGA_DIAG ?= 0
ifeq ($(filter 0 1,$(MEGA_DIAG)),)
  $(error MEGA_DIAG=$(MEGA_DIAG): 0 or 1)
endif
NVFLAGS     = -std=c++17 $(O) -g -I. $(CUDA_ARCH) -Xcompiler -Wall,-Wextra,-fPIC -MMD -MP --expt-relaxed-constexpr \
              -DBORA_MEGA_DIAG=$(MEGA_DIAG)

LIB_DIRS  = common config model mem dataplane console kernels
LIB_SRCS  = $(wildcard $(addsuffix /*.c,$(LIB_DIRS)))
CU_SRCS   =
ifeq ($(CUDA),1)
  CU_SRCS  = $(wildcard kernels/*.cu)
endif
ifneq ($(CU_SRCS),)
  CFLAGS  += -DBORA_CUDA=1 -I$(CUDA_HOME)/include
  LDLIBS_LIB += -L$(CUDA_HOME)/lib64 -Wl,-rpath,$(CUDA_HOME)/lib64 -lcublasLt -lcublas -lcudart -lstdc++
endif
# DPDK port (dataplane/dpdk_port.c): built in when pkg-config finds libdpdk; DPDK=0 leaves it out.
DPDK ?= $(shell pkg-config --exists libdpdk 2>/dev/null && echo 1 || echo 0)
ifeq ($(DPDK),1)
  $(BUILD)/obj/dataplane/dpdk_port.o: CFLAGS += -DBORA_DPDK=1 $(shell pkg-config --cflags libdpdk)
  LDLIBS_LIB += $(shell pkg-config --libs libdpdk)
endif
LIB_OBJS  = $(LIB_SRCS:%.c=$(BUILD)/obj/%.o) $(CU_SRCS:%.cu=$(BUILD)/obj/%.cu.o)
LIB       = $(BUILD)/libbora.a

BINS      = $(BUILD)/bora $(BUILD)/borad $(BUILD)/boractl
TEST_SRCS = $(wildcard tests/test_*.c)
GPU_TEST_SRCS = $(wildcard tests/gpu_*.c)
TEST_BINS = $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
GPU_TEST_BINS = $(GPU_TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
TEST_SUPPORT = $(wildcard tests/support/*.c)
TEST_SUPPORT_OBJS = $(TEST_SUPPORT:%.c=$(BUILD)/obj/%.o)
BENCH_SRCS = $(wildcard bench/*.c)
BENCH_BINS = $(BENCH_SRCS:bench/%.c=$(BUILD)/bench/%)
# GPU-only probes (bench/*.cu, standalone CUDA programs): built with CUDA, run by bench/gpu_*.sh
PROBE_BINS = $(if $(CU_SRCS),$(patsubst bench/%.cu,$(BUILD)/bench/%,$(wildcard bench/*.cu)))
FUZZ_SRCS = $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS = $(FUZZ_SRCS:tests/fuzz/%.c=$(BUILD)/fuzz/%)

.PHONY: all deps test test-gpu bench fuzz run install clean
.SECONDARY:
all: $(BINS) $(TEST_BINS) $(GPU_TEST_BINS) $(BENCH_BINS) $(PROBE_BINS) $(FUZZ_BINS)

# Installs missing Debian packages (as root) or prints the exact command; see scripts/deps.sh.
deps: $(BUILD)/.deps-ok
$(BUILD)/.deps-ok: scripts/deps.sh
	@bash scripts/deps.sh
	@mkdir -p $(BUILD) && touch $@

# Objects are rebuilt when the flags change (e.g. nvcc appears, or CUDA=0 is given).
FLAGS_STAMP := $(BUILD)/.flags
FLAGS_NOW := $(CFLAGS) | $(NVFLAGS) | $(LDLIBS_LIB) | $(CU_SRCS)
$(shell mkdir -p $(BUILD) && (echo '$(FLAGS_NOW)' | cmp -s - $(FLAGS_STAMP) || echo '$(FLAGS_NOW)' > $(FLAGS_STAMP)))

$(BUILD)/obj/%.o: %.c $(FLAGS_STAMP) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/obj/%.cu.o: %.cu $(FLAGS_STAMP) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(NVCC) $(NVFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

# Each executable is cmd/NAME.c plus cmd/NAME_*.c (its subcommands).
# jemalloc is the process allocator of the executables (linked, not preloaded).
cmd_objs = $(patsubst %.c,$(BUILD)/obj/%.o,$(wildcard cmd/$(1).c cmd/$(1)_*.c))
$(BUILD)/bora: $(call cmd_objs,bora) $(LIB)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIB) -o $@ $(JEMALLOC) $(LDLIBS_LIB)
$(BUILD)/borad: $(call cmd_objs,borad) $(LIB)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIB) -o $@ $(JEMALLOC) $(LDLIBS_LIB)
$(BUILD)/boractl: $(call cmd_objs,boractl) $(LIB)
	$(CC) $(CFLAGS) $(filter %.o,$^) $(LIB) -o $@ $(JEMALLOC) $(LDLIBS_LIB) -ledit

$(BUILD)/tests/%: $(BUILD)/obj/tests/%.o $(TEST_SUPPORT_OBJS) $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(TEST_SUPPORT_OBJS) $(LIB) -o $@ -lcmocka $(LDLIBS_LIB)

# The benchmarks run on the programs' allocator, so first-touch costs are the ones borad sees.
$(BUILD)/bench/%: $(BUILD)/obj/bench/%.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $< $(LIB) -o $@ $(JEMALLOC) $(LDLIBS_LIB)

$(BUILD)/bench/%: bench/%.cu $(FLAGS_STAMP) | $(BUILD)/.deps-ok
	@mkdir -p $(dir $@)
	$(NVCC) -std=c++17 -O3 -I. $(CUDA_ARCH) -Xcompiler -Wall,-Wextra -MMD -MP -MF $@.d -o $@ $<

# Fuzz targets use the libFuzzer entry point; tests/fuzz/driver.c runs them on files or
# random inputs with any compiler (make fuzz FUZZ_ITERS=N).
$(BUILD)/fuzz/%: $(BUILD)/obj/tests/fuzz/%.o $(BUILD)/obj/tests/fuzz/driver.o $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $^ -o $@ $(LDLIBS_LIB)

# test and run first install what is missing, then re-read this Makefile (DPDK is detected then).
test: deps
	@$(MAKE) --no-print-directory all
	@bash tests/run.sh $(BUILD)

test-gpu: all
	@bash tests/run.sh --gpu $(BUILD)

bench: all
	@for b in $(BENCH_BINS); do echo "== $$b"; $$b || exit 1; done

FUZZ_ITERS ?= 20000
fuzz: $(FUZZ_BINS)
	@for f in $(FUZZ_BINS); do echo "== $$f"; $$f --iters $(FUZZ_ITERS) || exit 1; done

# The appliance on its built-in default model, UDP and TCP on 127.0.0.1:7474.
run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/borad -c config/bora.ini

# Installs the three programs into $(DESTDIR)$(PREFIX)/bin (default /usr/local/bin) and the
# sample configuration into $(DESTDIR)/etc/bora/bora.ini unless one is there.
PREFIX ?= /usr/local
install: $(BINS)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)/etc/bora
	install -m 755 $(BINS) $(DESTDIR)$(PREFIX)/bin/
	test -e $(DESTDIR)/etc/bora/bora.ini || install -m 640 config/bora.ini $(DESTDIR)/etc/bora/bora.ini

clean:
	rm -rf $(BUILD)

-include $(shell find $(BUILD)/obj -name '*.d' 2>/dev/null)
-include $(wildcard $(BUILD)/bench/*.d)

# The default model embeds the tokenizer with .incbin (not seen by -MMD).
$(BUILD)/obj/model/default_model.o: model/default/tokenizer.model.v3
