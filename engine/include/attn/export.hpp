// Symbol visibility for the shared library: only what is marked ATTN_API is exported.
#pragma once

#if defined(ATTN_STATIC_DEFINE)
#define ATTN_API
#elif defined(__GNUC__)
#define ATTN_API [[gnu::visibility("default")]]
#else
#define ATTN_API
#endif
