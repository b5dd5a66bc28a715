// Allowed includes, for the layer check's own test: plan may use common and format.
#include "flashload/header.h"
#include "flashload/status.h"
