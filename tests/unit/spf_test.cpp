// Placeholder: filled in by the spf work.
#include <gtest/gtest.h>
