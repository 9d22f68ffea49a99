// Placeholder: filled in by the dkim work.
#include <gtest/gtest.h>
