# common_net: CURVE transport over libzmq and key/fingerprint crypto over libsodium.
# Included by common/CMakeLists.txt. `proto` is defined later (link by name resolves at generate).
set(COMMON_NET_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/crypto.c)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/transport.c)
  list(APPEND COMMON_NET_SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/transport.c)
endif()
add_library(common_net STATIC ${COMMON_NET_SOURCES})
target_include_directories(common_net PUBLIC ${CMAKE_CURRENT_SOURCE_DIR})
target_link_libraries(common_net PUBLIC common_core PkgConfig::ZMQ PkgConfig::SODIUM)
if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/transport.c)
  target_link_libraries(common_net PUBLIC proto)
endif()

add_unit_test(crypto_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/crypto_test.c LIBS common_net
              TIMEOUT 30)

if(EXISTS ${CMAKE_CURRENT_SOURCE_DIR}/transport.c)
  add_unit_test(transport_test SOURCES ${CMAKE_CURRENT_SOURCE_DIR}/transport_test.c
                LIBS common_net)
endif()
