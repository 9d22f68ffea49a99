// Placeholder: filled in by the dkim work.
namespace tern::mailauth {}
