# tests/fuzz/fuzz.mk: builds the libFuzzer harnesses against a second copy
# of the library objects, compiled by clang with
# -fsanitize=fuzzer-no-link,address,undefined, and runs each one for a
# bounded time.  GNU make; called by `make fuzz` (Makefile.am), which passes
# the compiler, the library's sources and its dependencies' flags, and
# first checks that clang's fuzzer runtime is there.  The gcc build, make
# check and make distcheck never read this file.
#
#   make fuzz                       every harness, FUZZ_SECONDS (60) each
#   make fuzz FUZZ_TARGETS=idx FUZZ_SECONDS=1800 FUZZ_FLAGS=-runs=10000000
#
# Outputs stay under tests/fuzz/build/ of the build tree: objects, the
# fuzz_* programs, the growing corpus per harness (corpus/NAME), the seed
# copies (seeds/NAME), a log per harness and any crash input
# (NAME-crash-*, NAME-leak-*, NAME-timeout-*).

FUZZ_CC ?= clang
FUZZ_SECONDS ?= 60
FUZZ_TARGETS ?= model cluster plan safetensors idx tokens
# Extra libFuzzer options for every run (e.g. -runs=N, -jobs=N).
FUZZ_FLAGS ?=
srcdir ?= .

B := tests/fuzz/build
F := $(srcdir)/tests/fuzz

# The library without MPI (a parser needs none: the configure result is
# copied without MPT_HAVE_MPI) and with the generated kernel table of the
# normal build.
LIB_C := $(filter-out lib/comm/mpi.c,$(filter %.c,$(FUZZ_LIB_SOURCES))) lib/kernels_embedded.c
LIB_O := $(patsubst %.c,$(B)/%.o,$(LIB_C))
CONFIG_H := $(B)/include/config.h

SAN := -fsanitize=fuzzer-no-link,address,undefined -fno-sanitize-recover=all
CFLAGS_FUZZ := -std=c11 -g -O1 -fno-omit-frame-pointer -DCL_TARGET_OPENCL_VERSION=120 \
	-I$(B)/include -I$(srcdir)/lib -I. -Ilib -I$(F) $(FUZZ_DEPS_CFLAGS) $(SAN)
LINK_FUZZ := -fsanitize=fuzzer,address,undefined $(FUZZ_DEPS_LIBS) -lm

vpath %.c . $(srcdir)

# Seeds: the tests' fixtures and the shipped files, plus what seeds/NAME
# holds (inputs written for the harness and regression inputs of fixed
# findings).  Large fixtures (gpt-tiny.safetensors, 250 kB) would only
# slow every execution down.
SEEDS_model := $(wildcard $(srcdir)/models/*.json $(srcdir)/tests/fixtures/cnn-*.json \
	$(srcdir)/tests/fixtures/torch/*.json)
SEEDS_cluster := $(wildcard $(srcdir)/models/clusters/*.json $(srcdir)/tests/fixtures/cluster-*.json)
SEEDS_plan :=
SEEDS_safetensors := $(srcdir)/tests/fixtures/torch/mlp-tiny.safetensors \
	$(srcdir)/tests/fixtures/torch/cnn-tiny.safetensors
SEEDS_idx :=
SEEDS_tokens :=

# A dictionary where the input is JSON (keys and words of the format).
DICT_model := -dict=$(F)/model.dict
DICT_cluster := -dict=$(F)/cluster.dict
DICT_plan := -dict=$(F)/plan.dict
DICT_safetensors := -dict=$(F)/safetensors.dict
DICT_idx :=
DICT_tokens :=

# The largest input tried: JSON files of the fixtures' size, binary files
# big enough for several tensors or a few hundred tokens.
MAXLEN_model := 4096
MAXLEN_cluster := 8192
MAXLEN_plan := 4096
MAXLEN_safetensors := 16384
MAXLEN_idx := 4096
MAXLEN_tokens := 4096

PROGRAMS := $(patsubst %,$(B)/fuzz_%,$(FUZZ_TARGETS))

all: $(PROGRAMS)

$(CONFIG_H): config.h
	@mkdir -p $(dir $@)
	@grep -v MPT_HAVE_MPI config.h > $@

$(B)/%.o: %.c $(CONFIG_H)
	@mkdir -p $(dir $@)
	@echo "  FUZZCC   $<"
	@$(FUZZ_CC) $(CFLAGS_FUZZ) -MMD -MP -c -o $@ $<

$(B)/libmpt-fuzz.a: $(LIB_O)
	@rm -f $@
	@ar rcs $@ $^

$(B)/fuzz_%: $(B)/tests/fuzz/fuzz_%.o $(B)/tests/fuzz/fuzz_util.o $(B)/libmpt-fuzz.a
	@echo "  FUZZLD   $@"
	@$(FUZZ_CC) -o $@ $^ $(LINK_FUZZ)

# run-NAME: the harness over its corpus for FUZZ_SECONDS; fails on a
# finding (libFuzzer exits non-zero and leaves the input as an artifact).
run-%: $(B)/fuzz_%
	@mkdir -p $(B)/corpus/$* $(B)/seeds/$*
	@for s in $(SEEDS_$*) $(wildcard $(F)/seeds/$*/*); do cp -f "$$s" $(B)/seeds/$*/; done
	@echo "fuzz_$*: $(FUZZ_SECONDS) s, log in $(B)/$*.log"
	@$(B)/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -max_len=$(MAXLEN_$*) -timeout=10 \
	    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix=$(B)/$*- $(DICT_$*) \
	    $(FUZZ_FLAGS) $(B)/corpus/$* $(B)/seeds/$* > $(B)/$*.log 2>&1; \
	  rc=$$?; grep -E '^#[0-9]+.*DONE|^stat::(number_of_executed_units|average_exec_per_sec|peak_rss)' \
	    $(B)/$*.log | sed 's/^/  fuzz_$*: /'; \
	  if [ $$rc -ne 0 ]; then tail -40 $(B)/$*.log; echo "fuzz_$*: FINDING, see $(B)/$*.log"; fi; \
	  exit $$rc

run: $(patsubst %,run-%,$(FUZZ_TARGETS))

# Headers each object was compiled with (written by -MMD).
-include $(wildcard $(B)/lib/*/*.d $(B)/lib/*.d $(B)/tests/fuzz/*.d)

.PHONY: all run
.SECONDARY:
