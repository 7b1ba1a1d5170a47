# cmake -DDIR=dir -P gzip-dir.cmake: compresses every file of DIR that is not
# already a .gz with `gzip -9n` (no name, no time: the same bytes every build),
# keeping the original.
file(GLOB files LIST_DIRECTORIES false "${DIR}/*")
foreach(f ${files})
  if(NOT f MATCHES "\\.gz$")
    execute_process(COMMAND gzip -9nkf ${f} RESULT_VARIABLE rc)
    if(NOT rc EQUAL 0)
      message(FATAL_ERROR "gzip ${f} failed")
    endif()
  endif()
endforeach()
