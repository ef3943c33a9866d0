#include "trace/trace-ft.h"
