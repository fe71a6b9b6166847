{
  "targets": [
    {
      "target_name": "mnedc_tun",
      "sources": ["native/tun.c"],
      "defines": ["NAPI_VERSION=8"],
      "cflags": ["-std=gnu11", "-Wall", "-Wextra", "-Wno-unused-parameter"]
    }
  ]
}
