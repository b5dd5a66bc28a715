// A planted violation for the layer check's own test (cmake/check_layers.cmake): the sink layer
// may not include the engine, which drives it. This tree is never compiled.
#ifndef FLASHLOAD_TESTS_LAYERS_PLANTED_H_
#define FLASHLOAD_TESTS_LAYERS_PLANTED_H_

#include "engine/engine.h"
#include "flashload/status.h"
#include "plan/plan.h"

#endif  // FLASHLOAD_TESTS_LAYERS_PLANTED_H_
