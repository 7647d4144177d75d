// One line per event on stderr: "<UTC time> <LEVEL> reference-core: <message>".
#pragma once

#include <string>

void log_info(const std::string& line);
void log_warning(const std::string& line);
void log_error(const std::string& line);
