// Placeholder: filled in by the dkim_parse work.
namespace tern::mailauth {}
