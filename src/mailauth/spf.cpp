// Placeholder: filled in by the spf work.
namespace tern::mailauth {}
